"""On the real CIFAR-10 (JPEG copy in ../shared, skipped where absent): a small WRN trained by
`nkd.main` from the official-format folder learns well above chance in a few hundred steps (the
loaders' own checks on it are in test_safe_unpickle.py).

The run is a child process, as a user's is: with nkd's compile settings (LLVM at -O1, XLA's
fusion emitters) a WRN-10-1 step runs 2.5-4x faster than with the settings the test processes
compile with (tests/conftest.py: -O0, which pays where a test compiles many programs and runs
each a few times, not here): 250 steps and two evaluations of the 10,000 test images took 29 s
of wall time in a child (49 s of CPU) against 78 s in-process (about 120 s of CPU) on a 2-vCPU
Zen 3. (In-process, it once trained on the test process's 4 fake CPU devices, whose all-reduces
could time out under load: the worker crash of commit c3d2106. In-process runs now use one of
them: tests/conftest.py.)"""

import json

from helpers import run_cli


def test_small_wrn_learns_real_cifar10(cifar10_official, tmp_path):
  # 250 steps on 8,000 real training images, then the 10,000 real test images.
  run_cli(
      [
          "--dataset=cifar10",
          f"--data_dir={cifar10_official}",
          "--model=wrn-10-1",
          "--train_subset=8000",
          "--batch_size=64",
          "--epochs=2",
          "--lr=0.05",
          "--lr_schedule=cosine",
          "--eval_suite=accuracy",
          "--log_every=50",
          "--eval_every=2",  # the 10,000 test images once, at the end
          f"--workspace={tmp_path}",
          "--name=real",
      ],
      check=True,
  )
  run = tmp_path / "runs" / "real" / "seed_0"
  config = json.load(open(run / "config.json"))
  assert config["num_train"] == 8000 and config["data_source"].startswith("cifar10 python folder")
  results = json.load(open(run / "results.json"))
  assert results["dataset"] == "cifar10" and results["steps"] == 250
  assert results["test_accuracy"] > 30, results  # Chance is 10%.
