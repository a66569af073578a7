"""Fixture for the position-embedding resampling of mama.h (SPEC A.1):
PyTorch's F.interpolate(bicubic, antialias=True, align_corners=False) of the
patch part of a pos_embed, up (4x4 -> 7x7) and down (6x6 -> 4x4).

    python3 tests/ref/make_pos_fixture.py   # writes tests/ref/fixtures/pos_resample.safetensors
"""
import os
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(7)
D = 5
out = {}
for name, g0, g in (("up", 4, 7), ("down", 6, 4)):
    pos = torch.randn(1, 1 + g0 * g0, D, dtype=torch.float64)
    grid = pos[:, 1:].reshape(1, g0, g0, D).permute(0, 3, 1, 2)
    res = F.interpolate(grid, size=(g, g), mode="bicubic", antialias=True, align_corners=False)
    res = res.permute(0, 2, 3, 1).reshape(1, g * g, D)
    out[f"{name}.src"] = pos.float()
    out[f"{name}.expected"] = torch.cat([pos[:, :1], res], dim=1).float()
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "pos_resample.safetensors")
save_file(out, path)
print("wrote", path)
