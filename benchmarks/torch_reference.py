"""Our own eager PyTorch version of the KD step, PGD and APGD-CE, for `python -m benchmarks.bench
--torch_reference`: the speed a RepDistiller-style PyTorch training loop reaches on the same
device. Not used for training; PyTorch is not a requirement of nkd.

The WRN matches nkd.models.wrn layer for layer: pre-activation basic blocks (BN-ReLU-conv3x3-
BN-ReLU-dropout-conv3x3), a 1x1 convolution shortcut on the pre-activated input where width or
stride changes, BatchNorm momentum 0.1 / eps 1e-5, the CIFAR-10 normalisation inside the model
(inputs in [0, 1]), so WRN-40-2 has 2,243,546 parameters and WRN-16-2 691,674. The KD step is
Hinton's loss with SGD (momentum 0.9, weight decay 5e-4 added to the gradient), the teacher in
eval mode under no_grad (the Fickle teacher: BatchNorm frozen, dropout on), Soft Randomization
as Gaussian noise on the student's input. As in RepDistiller, crop and flip happen in the data
loader, outside the timed step. bfloat16 is `torch.autocast`.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nkd.evaluation.autoattack import apgd

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class BasicBlock(nn.Module):

  def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_planes)
    self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(out_planes)
    self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
    self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
    self.equal_in_out = in_planes == out_planes and stride == 1
    self.shortcut = (
        None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)
    )

  def forward(self, x):
    preact = F.relu(self.bn1(x))
    shortcut = x if self.equal_in_out else self.shortcut(preact)
    y = self.conv1(preact)
    y = self.dropout(F.relu(self.bn2(y)))
    return self.conv2(y) + shortcut


class WideResNet(nn.Module):
  """WRN-depth-widen for 32x32 images in [0, 1]."""

  def __init__(self, depth: int, widen_factor: int, num_classes: int = 10, dropout: float = 0.0):
    super().__init__()
    if (depth - 4) % 6 or depth < 10:
      raise ValueError(f"WRN depth must be 6n+4 with n >= 1, got {depth}")
    n = (depth - 4) // 6
    self.register_buffer("mean", torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1))
    self.register_buffer("std", torch.tensor(CIFAR10_STD).view(1, 3, 1, 1))
    self.conv_init = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    blocks, in_planes = [], 16
    for width, stride in zip((16, 32, 64), (1, 2, 2)):
      for i in range(n):
        blocks.append(BasicBlock(in_planes, width * widen_factor, stride if i == 0 else 1, dropout))
        in_planes = width * widen_factor
    self.blocks = nn.Sequential(*blocks)
    self.bn_final = nn.BatchNorm2d(in_planes)
    self.fc = nn.Linear(in_planes, num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
      elif isinstance(m, nn.Linear):
        nn.init.zeros_(m.bias)

  def forward(self, x):
    x = self.conv_init((x - self.mean) / self.std)
    x = F.relu(self.bn_final(self.blocks(x)))
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)).float()


def create_model(name: str, dropout: float = 0.0, num_classes: int = 10) -> WideResNet:
  """'wrn-40-2' -> WideResNet(40, 2)."""
  _, depth, width = name.split("-")
  return WideResNet(int(depth), int(width), num_classes, dropout)


def count_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


def default_device() -> torch.device:
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device, dtype: str):
  return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def hinton_kd_loss(student_logits, teacher_logits, labels, alpha: float, tau: float):
  kd = F.kl_div(
      F.log_softmax(student_logits / tau, -1),
      F.log_softmax(teacher_logits / tau, -1),
      reduction="batchmean",
      log_target=True,
  )
  return (1 - alpha) * F.cross_entropy(student_logits, labels) + alpha * tau**2 * kd


def make_kd_step(
    student: nn.Module,
    teacher: nn.Module,
    *,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    alpha: float = 0.9,
    tau: float = 4.0,
    fickle: bool = False,
    input_noise_sigma: float = 0.0,
    dtype: str = "float32",
) -> Callable:
  """`step(images, labels) -> loss` (images float in [0, 1], NCHW, on the models' device)."""
  device = next(student.parameters()).device
  optimizer = torch.optim.SGD(
      student.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
  )
  teacher.eval()
  if fickle:  # BatchNorm frozen, dropout on
    for m in teacher.modules():
      if isinstance(m, nn.Dropout):
        m.train()
  student.train()

  def step(images, labels):
    with _autocast(device, dtype):
      with torch.no_grad():
        teacher_logits = teacher(images)
      student_images = images
      if input_noise_sigma:
        student_images = images + input_noise_sigma * torch.randn_like(images)
      loss = hinton_kd_loss(student(student_images), teacher_logits, labels, alpha, tau)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss

  return step


def _attacked(model: nn.Module) -> torch.device:
  """Puts a model under attack in eval mode with its parameters frozen; returns its device."""
  model.eval()
  for p in model.parameters():
    p.requires_grad_(False)
  return next(model.parameters()).device


def make_pgd(
    model: nn.Module,
    *,
    eps: float = 0.031,
    step_size: float = 0.003,
    steps: int = 20,
    dtype: str = "float32",
) -> Callable:
  """`attack(images, labels) -> adversarial images`: L-inf PGD with a uniform random start,
  cross-entropy, eval mode, [0, 1] pixels."""
  device = _attacked(model)

  def attack(images, labels):
    x = torch.clamp(images + torch.empty_like(images).uniform_(-eps, eps), 0, 1)
    for _ in range(steps):
      x.requires_grad_(True)
      with _autocast(device, dtype):
        loss = F.cross_entropy(model(x), labels, reduction="sum")
      (grad,) = torch.autograd.grad(loss, x)
      x = x.detach() + step_size * grad.sign()
      x = torch.clamp(torch.min(torch.max(x, images - eps), images + eps), 0, 1)
    return x.detach()

  return attack


def make_apgd(
    model: nn.Module,
    *,
    eps: float = 0.031,
    n_iter: int = 20,
    rho: float = 0.75,
) -> Callable:
  """`attack(images, labels) -> adversarial images`: APGD-CE, L-inf, one restart on every image
  (as nkd's `autoattack.apgd_attack` with restarts=1), after the reference implementation's
  `APGDAttack.attack_single_run` (Croce & Hein 2020): a uniform start scaled to the eps-sphere,
  step 2 eps, momentum 0.75; at each checkpoint the step is halved, and the iterate restarted
  from the best point, where the loss rose in at most rho of the steps since the last checkpoint
  or the best loss stalled. One forward and backward pass per iteration, one clean forward."""
  device = _attacked(model)
  # nkd's checkpoints (iteration -> interval since the previous one), so both attack alike.
  schedule = apgd.checkpoint_schedule(n_iter)
  checkpoints = {w: w - previous for previous, w in zip([0, *schedule], schedule)}

  def loss_grad(x, labels):
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = F.cross_entropy(logits, labels, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad.detach(), logits.detach().argmax(1) != labels

  def attack(images, labels):
    n = images.shape[0]
    per_example = (n, 1, 1, 1)
    with torch.no_grad():
      model(images).argmax(1)  # the clean prediction (nkd's reports which points were correct)
    t = 2 * torch.rand(images.shape, device=device) - 1
    t_max = t.reshape(n, -1).abs().amax(1).reshape(per_example)
    x = torch.clamp(images + eps * t / t_max, 0, 1)
    low, high = torch.clamp(images - eps, min=0), torch.clamp(images + eps, max=1)
    loss, grad, fooled = loss_grad(x, labels)
    x_prev, x_best, grad_best, x_adv = x, x.clone(), grad.clone(), x.clone()
    loss_prev, loss_best = loss, loss.clone()
    step = torch.full(per_example, 2 * eps, device=device)
    increases = torch.zeros(n, device=device)
    best_at_check, reduced_last = loss_best.clone(), torch.ones(n, dtype=torch.bool, device=device)
    for i in range(n_iter):
      with torch.no_grad():
        a = 0.75 if i > 0 else 1.0
        z = torch.max(torch.min(x + step * grad.sign(), high), low)
        x_new = torch.max(torch.min(x + a * (z - x) + (1 - a) * (x - x_prev), high), low)
      loss, grad, wrong = loss_grad(x_new, labels)
      with torch.no_grad():
        x_adv[wrong] = x_new[wrong]
        fooled |= wrong
        improved = loss > loss_best
        x_best[improved], grad_best[improved] = x_new[improved], grad[improved]
        loss_best = torch.where(improved, loss, loss_best)
        increases += (loss > loss_prev).float()
        x_prev, x, loss_prev = x, x_new, loss
        interval = checkpoints.get(i + 1)
        if interval:
          halve = (increases <= rho * interval) | (~reduced_last & (best_at_check >= loss_best))
          step[halve] /= 2
          x[halve], grad[halve] = x_best[halve], grad_best[halve]
          reduced_last, best_at_check = halve, loss_best.clone()
          increases.zero_()
    return torch.where(fooled.reshape(per_example), x_adv, x_best)

  return attack


def time_calls(
    fn: Callable[[], object],
    *,
    calls: int,
    repeats: int,
    warmup: int = 2,
    warmup_s: float = 2.0,
    device: torch.device | None = None,
) -> list[float]:
  """Seconds of `calls` calls of `fn`, `repeats` times, after at least `warmup` calls and
  `warmup_s` seconds of calls (the first calls of a shape are slow, and so is a CPU that was
  idle)."""
  device = device or default_device()
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  start, done = time.perf_counter(), 0
  while done < warmup or time.perf_counter() - start < warmup_s:
    fn()
    sync()
    done += 1
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      fn()
    sync()
    times.append(time.perf_counter() - start)
  return times


def benchmark(
    *,
    teacher: str = "wrn-40-2",
    student: str = "wrn-16-2",
    batch: int = 128,
    pgd_batch: int = 1000,
    pgd_steps: int = 20,
    steps: int = 10,
    repeats: int = 5,
    warmup_s: float = 2.0,
    threads: int | None = None,
    rows: tuple[str, ...] = (
        "kd_step_fp32",
        "kd_step_bf16",
        "kd_step_fickle",
        "kd_step_softrand",
        "pgd20_fp32",
        "pgd20_bf16",
        "apgd_ce_fp32",
    ),
    seed: int = 0,
) -> dict[str, dict]:
  """img/s (median over `repeats`) of each row benchmarks.bench also measures, on default_device();
  `threads` sets torch's CPU threads (default: PyTorch's, one per core)."""
  if threads:
    torch.set_num_threads(threads)
  torch.manual_seed(seed)
  device = default_device()
  out = {}
  for row in rows:
    if row.startswith("kd_step"):
      dtype = "bfloat16" if row.endswith("bf16") else "float32"
      fickle = row == "kd_step_fickle"
      t_model = create_model(teacher, dropout=0.3 if fickle else 0.0).to(device)
      s_model = create_model(student).to(device)
      step = make_kd_step(
          s_model,
          t_model,
          fickle=fickle,
          dtype=dtype,
          input_noise_sigma=0.05 if row == "kd_step_softrand" else 0.0,
      )
      images = torch.rand(batch, 3, 32, 32, device=device)
      labels = torch.randint(0, 10, (batch,), device=device)
      times = time_calls(
          lambda: step(images, labels),
          calls=steps,
          repeats=repeats,
          warmup_s=warmup_s,
          device=device,
      )
      n = steps * batch
    elif row.startswith(("pgd", "apgd")):
      dtype = "bfloat16" if row.endswith("bf16") else "float32"
      model = create_model(student).to(device)
      if row == "apgd_ce_fp32":
        attack = make_apgd(model, n_iter=pgd_steps)
      else:
        attack = make_pgd(model, steps=pgd_steps, dtype=dtype)
      images = torch.rand(pgd_batch, 3, 32, 32, device=device)
      labels = torch.randint(0, 10, (pgd_batch,), device=device)
      times = time_calls(
          lambda: attack(images, labels),
          calls=1,
          repeats=repeats,
          warmup=1,
          warmup_s=warmup_s,
          device=device,
      )
      n = pgd_batch
    else:
      continue
    median = statistics.median(times)
    out[row] = {"img_per_s": n / median, "median_s": median, "times_s": times}
  return out
