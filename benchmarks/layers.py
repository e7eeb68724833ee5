"""One convolution layer at a time: nkd's conv2d (on CPU, nkd's kernels where they apply) against
XLA's own convolution, forward pass, input gradient and kernel gradient.

  python -m benchmarks.layers [--batch=128] [--repeats=5] [--only=LAYER,LAYER] [--json=PATH]

The layers are a WRN's kinds (named size_in-out_kernel_stride, e.g. 32_32-64_3_2): each is
jitted alone, timed after a warm-up, and the best of --repeats timings is printed in
milliseconds with the direct convolution's GFLOP/s in brackets (2 N P Q KH KW I O, whatever
algorithm ran: Winograd's does fewer). JAX is set up as for a training run
(nkd.pipeline.setup_jax), so the conv2d column is what a run gets on this machine;
`NKD_CPU_KERNELS=off` makes it XLA's too. Run it alone on the machine: anything else running
skews it.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from nkd import cli, fileio, pipeline
from nkd import config as config_lib
from nkd.devices import environment
from nkd.models import conv

PROG = "benchmarks.layers"
# (image size, input channels, output channels, kernel, stride): a WRN-16-2's layers, the first
# layer and a strided 1x1 shortcut. Padding is (kernel - 1) / 2, as in nkd.models.wrn.
LAYERS = {
    f"{s}_{i}-{o}_{k}_{st}": (s, i, o, k, st)
    for s, i, o, k, st in (
        (32, 16, 32, 3, 1),
        (32, 32, 32, 3, 1),
        (32, 32, 64, 3, 2),
        (16, 64, 64, 3, 1),
        (16, 64, 128, 3, 2),
        (8, 128, 128, 3, 1),
        (32, 3, 16, 3, 1),
        (32, 32, 64, 1, 2),
    )
}
PARTS = ("forward", "input_grad", "kernel_grad")
SECTIONS = (("layers and sizes", ("only", "batch", "repeats")), ("output", ("json",)))


def _best_ms(fn: Callable[..., Any], args, repeats: int) -> float:
  fn(*args).block_until_ready()  # compile and warm up
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn(*args).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return best * 1e3


def measure(name: str, batch: int, repeats: int) -> dict[str, Any]:
  """{part: {"conv2d": ms, "xla": ms}} and the direct convolution's GFLOP for one layer."""
  size, cin, cout, k, stride = LAYERS[name]
  pad = (k - 1) // 2
  padding = ((pad, pad), (pad, pad))
  out = (size + 2 * pad - k) // stride + 1
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, size, size, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin), jnp.float32)
  g = jnp.asarray(rng.normal(size=(batch, out, out, cout)), jnp.float32)
  result: dict[str, Any] = {"gflop": 2 * batch * out * out * k * k * cin * cout / 1e9}
  for label, fn in (("conv2d", conv.conv2d), ("xla", conv._conv)):  # pylint: disable=protected-access
    layer = lambda x, w, fn=fn: fn(x, w, stride, padding)  # noqa: E731
    programs = {
        "forward": (jax.jit(layer), (x, w)),
        "input_grad": (jax.jit(lambda x, g: jax.vjp(lambda x: layer(x, w), x)[1](g)[0]), (x, g)),
        "kernel_grad": (jax.jit(lambda w, g: jax.vjp(lambda w: layer(x, w), w)[1](g)[0]), (w, g)),
    }
    for part, (program, args) in programs.items():
      result.setdefault(part, {})[label] = _best_ms(program, args, repeats)
  return result


def format_table(results: dict[str, dict[str, Any]], device: str) -> str:
  head = f"{'layer':<16}" + "".join(f"{p + ' conv2d':>22}{p + ' xla':>20}" for p in PARTS)
  lines = [f"{PROG} on {device}; ms, best of the timings (direct-convolution GFLOP/s)", head]
  lines.append("-" * len(head))
  for name, r in results.items():
    cells = [
        f"{r[p][c]:>{w}.2f} ({r['gflop'] / r[p][c] * 1e3:>4.0f})"
        for p in PARTS
        for c, w in (("conv2d", 15), ("xla", 13))
    ]
    lines.append(f"{name:<16}" + "".join(cells))
  return "\n".join(lines)


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_integer("batch", 128, "Images per call.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer(
      "repeats", 5, "Timings per program (best kept).", lower_bound=1, flag_values=fv
  )
  flags.DEFINE_list("only", [], f"Layers, of {', '.join(LAYERS)}; default: all.", flag_values=fv)
  flags.DEFINE_string("json", "", "Also write the results as JSON here.", flag_values=fv)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the layers; `argv` without the program name (default: sys.argv's). Exit 2 on bad
  input, with one line saying what is wrong."""
  argv = sys.argv[1:] if argv is None else list(argv)
  flag_values = flags.FlagValues()
  define_flags(flag_values)
  if cli.answer_help(argv, __doc__, flag_values, SECTIONS):
    return 0
  try:
    rest = flag_values([PROG, *argv])[1:]
    if rest:
      raise ValueError(f"unexpected arguments {' '.join(rest)}; options are --flags")
    names = tuple(flag_values.only) or tuple(LAYERS)
    unknown = [n for n in names if n not in LAYERS]
    if unknown:
      raise ValueError(f"--only: unknown layer {unknown[0]!r}; layers are {', '.join(LAYERS)}")
  except (flags.Error, ValueError) as e:
    return cli.usage_error(PROG, e, flag_values)
  pipeline.setup_jax(config_lib.Config())  # before the backend starts, as for a run
  env = environment()
  results = {}
  for name in names:
    print(f"[{PROG}] {name} ...", file=sys.stderr, flush=True)
    results[name] = measure(name, flag_values.batch, flag_values.repeats)
  print(format_table(results, f"{env['device']} x{env['device_count']}"), flush=True)
  if flag_values.json:
    settings = {"batch": flag_values.batch, "repeats": flag_values.repeats}
    fileio.write_json(
        flag_values.json, {"environment": env, "settings": settings, "layers": results}
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
