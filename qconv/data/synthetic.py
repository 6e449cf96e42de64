"""Random feeds honouring the model's input shapes: for latency smoke runs, never for accuracy.

Symbolic dimensions take their size from ``shapes`` (``--shape name=1,3,224,224``); a symbolic
leading (batch) dimension defaults to the batch size. Floats are drawn from N(0, 1) or U(0, 1);
integer inputs from [0, 10). Everything is seeded, so two runs see the same data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from qconv.data import Feed, InputSpec
from qconv.errors import ConfigError

DEFAULT_SAMPLES = 32
SEED = 0


class RandomReader:
    """Seeded random feeds.

    Attributes:
        synthetic: Always True: reports must say the ranges come from random data.
    """

    synthetic = True

    def __init__(
        self,
        specs: Sequence[InputSpec],
        distribution: str = "normal",
        batch_size: int = 1,
        samples: int | None = None,
        shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        if distribution not in ("normal", "uniform"):
            raise ConfigError(
                f"random:{distribution} is unknown", "use random:normal or random:uniform"
            )
        self.specs = list(specs)
        self.distribution = distribution
        self.batch_size = batch_size
        self._samples = samples or DEFAULT_SAMPLES
        self.shapes = {s.name: _concrete(s, batch_size, shapes or {}) for s in self.specs}

    @property
    def num_samples(self) -> int:
        return self._samples

    @property
    def num_batches(self) -> int:
        return -(-self._samples // self.batch_size)

    def labels(self) -> np.ndarray | None:
        return None

    def __iter__(self) -> Iterator[Feed]:
        rng = np.random.default_rng(SEED)
        left = self._samples
        while left > 0:
            batch = min(self.batch_size, left)
            yield {s.name: self._draw(rng, s, batch) for s in self.specs}
            left -= batch

    def _draw(self, rng: np.random.Generator, spec: InputSpec, batch: int) -> np.ndarray:
        shape = list(self.shapes[spec.name])
        if shape and not isinstance(spec.shape[0], int):
            shape[0] = batch
        if np.issubdtype(spec.dtype, np.integer):
            return rng.integers(0, 10, size=shape).astype(spec.dtype)
        if np.issubdtype(spec.dtype, np.bool_):
            return rng.integers(0, 2, size=shape).astype(bool)
        if self.distribution == "uniform":
            return rng.uniform(0, 1, size=shape).astype(spec.dtype)
        return rng.normal(0, 1, size=shape).astype(spec.dtype)


def _concrete(
    spec: InputSpec, batch_size: int, shapes: Mapping[str, tuple[int, ...]]
) -> tuple[int, ...]:
    if spec.name in shapes:
        given = tuple(shapes[spec.name])
        if len(given) != spec.rank:
            raise ConfigError(
                f"--shape {spec.name}={','.join(map(str, given))} has rank {len(given)} but the "
                f"input is {spec.describe()}",
                f"give {spec.rank} sizes",
            )
        return given
    dims = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int) and dim > 0:
            dims.append(dim)
        elif axis == 0:
            dims.append(batch_size)
        else:
            raise ConfigError(
                f"input {spec.describe()} has a symbolic size on axis {axis}",
                f"give its shape with --shape {spec.name}="
                + ",".join(str(d) if isinstance(d, int) else "SIZE" for d in spec.shape),
            )
    return tuple(dims)
