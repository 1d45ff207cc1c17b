#!/usr/bin/env python3
"""A model written by PyTorch, for noether's round-trip test (tests/net_commands.rs).

  python3 make.py                  # writes model.safetensors, data.safetensors, expected.json (float32 state_dict)
  python3 make.py --check FILE     # loads FILE (e.g. noether's teleported model) into the same nn.Sequential with
                                   # strict=True and checks that it computes the same function on the data

The model is an nn.Sequential with the documented Residual block (DESIGN.md §5), conv and linear residual
streams, trained 20 SGD steps in float32 so it is not at its initialisation, saved with safetensors as PyTorch
saves a state_dict (float32, PyTorch's names). expected.json holds, computed by PyTorch in float64 from the same
float32 weights: the network outputs f(x_n), the per-sample and mean cross-entropy losses, and the mean gradient in
state_dict order. Needs torch and safetensors (../shared/peers/run.sh's virtual environment has both)."""
import json, sys
import torch
from torch import nn
from safetensors.torch import save_file, load_file


class Residual(nn.Module):
    def __init__(self, *mods):
        super().__init__()
        self.body = nn.Sequential(*mods)

    def forward(self, x):
        return x + self.body(x)


def network():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        Residual(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, bias=False)),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(36, 8),
        nn.ReLU(),
        Residual(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)),
        nn.Linear(8, 3),
    )


def outputs(net, x, y):
    net = net.double()
    f = net(x.double())
    losses = nn.functional.cross_entropy(f, y, reduction="none")
    net.zero_grad()
    losses.mean().backward()
    grad = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    return f, losses, grad


def main():
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    data = load_file(f"{here}/data.safetensors") if "--check" in sys.argv else None
    if data is None:
        torch.manual_seed(7)
        x = torch.randn(40, 2, 6, 6)
        y = torch.randint(0, 3, (40,))
        net = network()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for step in range(20):
            idx = torch.randint(0, 40, (8,))
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, f"{here}/model.safetensors")
        save_file({"x": x.double(), "y": y}, f"{here}/data.safetensors")
        listing = [[k, list(v.shape), str(v.dtype)] for k, v in net.state_dict().items()]
        f, losses, grad = outputs(net, x, y)
        json.dump(
            {
                "state_dict": listing,
                "outputs": f.detach().tolist(),
                "losses": losses.detach().tolist(),
                "loss": losses.mean().item(),
                "grad": grad.tolist(),
            },
            open(f"{here}/expected.json", "w"),
        )
        return
    path = sys.argv[sys.argv.index("--check") + 1]
    net = network().double()
    net.load_state_dict(load_file(path), strict=True)
    want = json.load(open(f"{here}/expected.json"))
    f, losses, _ = outputs(net, data["x"], data["y"])
    err = (f - torch.tensor(want["outputs"], dtype=torch.float64)).abs().max().item()
    print(f"{path}: loaded strictly by PyTorch; max |f(x) - f_original(x)| = {err:.2e}")
    sys.exit(0 if err < 1e-10 else 1)


if __name__ == "__main__":
    main()
