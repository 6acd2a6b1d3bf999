#!/usr/bin/env python3
"""Writes tests/fixtures/mlp_zip.pth: a PyTorch state dict in torch.save's zip format (1.6+),
produced without torch, so the import tests cover both .pth formats (the legacy one is the
real MobileNetV2 file).

The layout follows torch/serialization.py: `<name>/data.pkl` pickles an OrderedDict whose
tensors reduce to `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
requires_grad, hooks)`, each storage a persistent id `("storage", torch.FloatStorage, key,
"cpu", numel)` whose bytes are `<name>/data/<key>`; plus `<name>/version` and
`<name>/byteorder`. Values (also asserted by the test): net.0.weight[o][i] = o + i / 10
(shape 4x3), net.0.bias[o] = -o, net.2.weight[o][i] = o - i / 100 (shape 2x4),
net.2.bias = [0.5, -0.5]. Tensors are contiguous, as `state_dict()` parameters are:
burn-store 0.21 ignores strides (see README, notes on burn).

    python3 scripts/make_zip_pth.py tests/fixtures/mlp_zip.pth
"""
import collections
import io
import pickle
import struct
import sys
import types
import zipfile

torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch, utils


def _rebuild_tensor_v2(*args):
    raise RuntimeError("only for pickling")


_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class FloatStorage:
    pass


FloatStorage.__module__ = "torch"
torch.FloatStorage = FloatStorage


class Storage:
    def __init__(self, key, values):
        self.key, self.values = key, values


class Tensor:
    def __init__(self, storage, size, stride):
        self.storage, self.size, self.stride = storage, size, stride

    def __reduce_ex__(self, protocol):
        args = (self.storage, 0, self.size, self.stride, False, collections.OrderedDict())
        return (_rebuild_tensor_v2, args)


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cpu", len(obj.values))
        return None


def main(path):
    w0 = [o + i / 10 for o in range(4) for i in range(3)]
    b0 = [-float(o) for o in range(4)]
    w2 = [o - i / 100 for o in range(2) for i in range(4)]
    b2 = [0.5, -0.5]
    storages = [Storage(str(k), v) for k, v in enumerate([w0, b0, w2, b2])]
    state = collections.OrderedDict(
        [
            ("net.0.weight", Tensor(storages[0], (4, 3), (3, 1))),
            ("net.0.bias", Tensor(storages[1], (4,), (1,))),
            ("net.2.weight", Tensor(storages[2], (2, 4), (4, 1))),
            ("net.2.bias", Tensor(storages[3], (2,), (1,))),
        ]
    )
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(state)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("mlp_zip/data.pkl", buf.getvalue())
        z.writestr("mlp_zip/byteorder", "little")
        for s in storages:
            z.writestr(f"mlp_zip/data/{s.key}", struct.pack(f"<{len(s.values)}f", *s.values))
        z.writestr("mlp_zip/version", "3\n")


if __name__ == "__main__":
    main(sys.argv[1])
