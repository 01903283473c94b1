"""GRIDE intrinsic dimension per layer, run in the dadapy environment (`scripts/setup_dadapy.sh`).

Called by `representations.intrinsic_dimension` as `python gride_dadapy.py '<json arguments>'`. It imports only
numpy and dadapy (the environment has `numpy<2` and none of this package's dependencies).

Arguments: `input` (`.npy`, `(layers, samples, dim)`), `output` (JSON path), `batch_size`, `range_max`, `scale`,
`seed`. Output: per layer `{"id", "id_std", "batches", "scales", "curve"}` (see `intrinsic_dimension`).
"""

import json
import sys

import numpy as np
from dadapy import Data


def gride_curve(points: np.ndarray, range_max: int) -> tuple[list[float], list[float]]:
    """GRIDE estimates at neighbour scales 2, 4, ..., `range_max` (duplicate points removed first)."""
    data = Data(points.astype(np.float64))
    data.remove_identical_points()
    ids, _, rs = data.return_id_scaling_gride(range_max=range_max)
    return [float(v) for v in ids], [float(v) for v in rs]


def main(arguments: dict) -> None:
    representations = np.load(arguments["input"], mmap_mode="r")
    rng = np.random.default_rng(arguments["seed"])
    num_samples = representations.shape[1]
    order = rng.permutation(num_samples)
    size = min(arguments["batch_size"], num_samples)
    batches = [order[i : i + size] for i in range(0, num_samples - size + 1, size)]
    scale_index = int(np.log2(arguments["scale"])) - 1  # scales are 2, 4, 8, ...
    results = []
    for index, layer in enumerate(representations):
        print(f"GRIDE: layer {index + 1}/{len(representations)}", file=sys.stderr, flush=True)  # progress
        estimates, curves = [], []
        for batch in batches:
            curve, _ = gride_curve(np.asarray(layer[np.sort(batch)]), arguments["range_max"])
            curves.append(curve)
            estimates.append(curve[min(scale_index, len(curve) - 1)])
        results.append(
            {
                "id": float(np.mean(estimates)),
                "id_std": float(np.std(estimates)),
                "batches": estimates,
                "scales": [2 ** (i + 1) for i in range(len(curves[0]))],
                "curve": np.mean(curves, axis=0).tolist(),
            }
        )
    with open(arguments["output"], "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
