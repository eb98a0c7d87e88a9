#!/usr/bin/env python3
"""Writes tests/data/torch_fixture.safetensors (a small nn.Sequential's state
dict, as PyTorch names and lays it out) and tests/data/torch_fixture_io.safetensors
("input", and "output": the net's forward pass in eval mode), which
tests/test_safetensors.cpp loads into the same xgrad Sequential. Needs torch
(Debian: python3-torch); the safetensors package is not needed: the format
is written here with struct and json. Run: /usr/bin/python3 tests/data/make_torch_fixture.py
"""
import json
import os
import struct

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
DTYPES = {torch.float32: ("F32", "<f"), torch.int64: ("I64", "<q")}


def write_safetensors(path, tensors):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        dtype, fmt = DTYPES[t.dtype]
        flat = t.detach().contiguous().reshape(-1).tolist()
        blob = struct.pack("<%d%s" % (len(flat), fmt[1]), *flat)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main():
    torch.manual_seed(21)
    # The xgrad twin (tests/test_safetensors.cpp, torch_twin()) has the same layers.
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=1, padding=1),  # 0
        nn.BatchNorm2d(4),  # 1
        nn.ReLU(),  # 2
        nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1),  # 3: 6x6 -> 12x12
        nn.LeakyReLU(0.2),  # 4
        nn.Flatten(),  # 5
        nn.Linear(2 * 12 * 12, 5),  # 6
        nn.BatchNorm1d(5),  # 7
        nn.Tanh(),  # 8
    )
    net.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics that are not the initial 0 and 1
            net(torch.randn(8, 1, 6, 6))
    net.eval()
    x = torch.randn(3, 1, 6, 6)
    with torch.no_grad():
        y = net(x)
    write_safetensors(os.path.join(HERE, "torch_fixture.safetensors"), net.state_dict())
    write_safetensors(os.path.join(HERE, "torch_fixture_io.safetensors"), {"input": x, "output": y})
    print("torch", torch.__version__, "output", tuple(y.shape))


if __name__ == "__main__":
    main()
