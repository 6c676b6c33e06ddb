"""Training recipes for resnet8 on mnist5k, searched on a PyTorch mirror of zskip's training.

    python bench/resnet8_recipes.py [--seeds 0 1 2 3] [--epochs 3] [--report resnet8_recipes.json]

A run of 3 epochs takes about 20 s here against about 3 minutes on the numpy
reference and 20 on the emulated accelerator, so recipes are compared over
several seeds on this mirror first; the chosen one is then run on ``emu``
(README, "ResNet and batch normalisation"). The mirror is zskip's training
in PyTorch (needs ``zskip[bench]``): the same model (``get_model``), the same
initial weights (``Model.init_params(seed)``), batches (``epoch_permutation``),
augmentation draws and learning rate of each step (``lr_at``), PyTorch's SGD
with the same momentum and weight decay rule (``reference.sgd_update``) and
batch normalisation with PyTorch's momentum; it differs from zskip only in
float32 summation order, which is enough to move a 3-epoch run's final test
accuracy by a few tenths of a point, hence the seeds.

Each recipe prints the test accuracy after the last epoch per seed, and
their mean, min and max.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from zskip.models.datasets import load_dataset
from zskip.models.lr_schedule import lr_at
from zskip.models.networks import get_model
from zskip.models.train import epoch_permutation, training_batch

#: name -> (data spec, lr, nesterov); all with the cosine schedule, momentum 0.9, weight decay 1e-4
RECIPES = {
    "heavy ball, lr 0.3": ("mnist5k", 0.3, False),
    "nesterov, lr 0.3": ("mnist5k", 0.3, True),
    "nesterov, lr 0.3, shifts": ("mnist5k:augment", 0.3, True),
    "nesterov, lr 0.2, shifts": ("mnist5k:augment", 0.2, True),
}


def _forward(F, params, layers, x, first, train):
    """Logits of zskip's layer list on x; ``first``: the number of layers[0] (pre-order, as param keys)."""
    i = first
    for layer in layers:
        me, i = i, i + 1
        key = lambda name: f"layer{me}.{name}"
        if layer.kind == "conv":
            x = F.conv2d(x, params[key("w")], params[key("b")], stride=layer.stride, padding=layer.pad)
            x = F.relu(x) if layer.relu else x
        elif layer.kind == "batchnorm":
            x = F.batch_norm(x, params[key("running_mean")], params[key("running_var")], params[key("gamma")],
                             params[key("beta")], training=train, momentum=layer.momentum, eps=layer.eps)
            x = F.relu(x) if layer.relu else x
        elif layer.kind == "residual":
            body, i = _forward(F, params, layer.body, x, i, train)
            skip, i = _forward(F, params, layer.shortcut, x, i, train) if layer.shortcut else (x, i)
            x = F.relu(body + skip)
        elif layer.kind == "avgpool":
            x = x.mean(dim=(2, 3))
        elif layer.kind == "linear":
            x = F.linear(x.reshape(x.shape[0], -1), params[key("w")], params[key("b")])
            x = F.relu(x) if layer.relu else x
        else:
            raise ValueError(f"layer kind {layer.kind!r} is not mirrored")
    return x, i


def run(data: str, lr: float, nesterov: bool, seed: int, epochs: int = 3, batch_size: int = 64,
        weight_decay: float = 1e-4) -> list:
    """Test accuracy after each epoch of one mirrored run."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(1)
    ds = load_dataset(data)
    model = get_model("resnet8", ds.input_shape)
    params = {k: torch.tensor(v) for k, v in model.init_params(seed).items()}
    trained = [p.requires_grad_() for k, p in params.items() if "running" not in k]
    opt = torch.optim.SGD(trained, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=nesterov)
    n = len(ds.y_train)
    steps = math.ceil(n / batch_size)
    accuracy = []
    for epoch in range(epochs):
        perm = epoch_permutation(seed, epoch, n)
        for s in range(steps):
            t = epoch * steps + s
            idx = perm[s * batch_size:(s + 1) * batch_size]
            x = training_batch(ds, idx, seed, t)
            for group in opt.param_groups:
                group["lr"] = lr_at("cosine", lr, t, epochs * steps)
            logits, _ = _forward(F, params, model.layers, torch.tensor(x), 0, True)
            loss = F.cross_entropy(logits, torch.tensor(ds.y_train[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            logits, _ = _forward(F, params, model.layers, torch.tensor(ds.x_test), 0, False)
        accuracy.append(float((logits.argmax(1).numpy() == ds.y_test).mean()))
    return accuracy


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), help=f"from: {'; '.join(RECIPES)}")
    p.add_argument("--report", default="resnet8_recipes.json")
    args = p.parse_args(argv)
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        p.error(f"--recipes: unknown {unknown}; known: {list(RECIPES)}")
    rows = []
    print("| recipe | final test accuracy per seed | mean | min - max |\n|---|---|---|---|")
    for name in args.recipes:
        data, lr, nesterov = RECIPES[name]
        final = []
        for seed in args.seeds:
            acc = run(data, lr, nesterov, seed, args.epochs)
            print(f"{name}, seed {seed}: " + " / ".join(f"{100 * a:.1f}" for a in acc), file=sys.stderr, flush=True)
            final.append(acc[-1])
        rows.append({"recipe": name, "data": data, "lr": lr, "nesterov": nesterov, "seeds": args.seeds,
                     "final_test_accuracy": final})
        print(f"| {name} | {', '.join(f'{100 * a:.1f}' for a in final)} % | {100 * np.mean(final):.2f} % | "
              f"{100 * min(final):.1f} - {100 * max(final):.1f} % |", flush=True)
    with open(args.report, "w") as f:
        json.dump({"epochs": args.epochs, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
