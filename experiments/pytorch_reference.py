"""The PyTorch examples/mnist recipe, timed from process start to >= 99 % test accuracy.

  pip install torch numpy          # in its own environment; mnist_jax is not needed
  python experiments/pytorch_reference.py --data_dir=../shared/data/mnist [--epochs=14]

The recipe of github.com/pytorch/examples/blob/main/mnist/main.py: conv 3x3x32
-> ReLU -> conv 3x3x64 -> ReLU -> max-pool 2 -> dropout 0.25 -> Dense 128 ->
ReLU -> dropout 0.5 -> Dense 10 -> log-softmax, NLL loss, Adadelta (lr 1.0),
StepLR (gamma 0.7 per epoch), batch 64, test batch 1000, inputs normalized with
mean 0.1307 and std 0.3081, seed 1, torch's default threads. One change that
only makes it faster: batches are sliced from tensors held in memory instead
of torchvision's per-image DataLoader, so the time measured is a lower bound
for the original script. Prints one line per epoch and, at the end, the
seconds from process start to the first test evaluation >= --target.
"""
import time

START = time.time()   # before the heavy imports: process start, as experiments/benchmark.py

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import gzip
import os
import platform

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


class Net(nn.Module):
  """examples/mnist's Net, unchanged."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 32, 3, 1)
    self.conv2 = nn.Conv2d(32, 64, 3, 1)
    self.dropout1 = nn.Dropout(0.25)
    self.dropout2 = nn.Dropout(0.5)
    self.fc1 = nn.Linear(9216, 128)
    self.fc2 = nn.Linear(128, 10)

  def forward(self, x):
    x = F.relu(self.conv1(x))
    x = F.relu(self.conv2(x))
    x = F.max_pool2d(x, 2)
    x = torch.flatten(self.dropout1(x), 1)
    x = self.dropout2(F.relu(self.fc1(x)))
    return F.log_softmax(self.fc2(x), dim=1)


def read_idx(path):
  """An IDX file (optionally .gz) as a numpy array."""
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rb') as f:
    data = f.read()
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(data_dir, split):
  prefix = 'train' if split == 'train' else 't10k'
  names = os.listdir(data_dir)
  find = lambda kind: os.path.join(data_dir, next(
      n for n in names if n.startswith(f'{prefix}-{kind}')))
  x = torch.from_numpy(read_idx(find('images')).astype(np.float32) / 255.0)
  x = ((x - 0.1307) / 0.3081).unsqueeze(1)                 # ToTensor + Normalize
  return x, torch.from_numpy(read_idx(find('labels')).astype(np.int64))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--data_dir', required=True)
  parser.add_argument('--epochs', type=int, default=14)
  parser.add_argument('--target', type=float, default=0.99)
  args = parser.parse_args()
  torch.manual_seed(1)
  train_x, train_y = load(args.data_dir, 'train')
  test_x, test_y = load(args.data_dir, 'test')
  model = Net()
  optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
  scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
  reached = None
  for epoch in range(1, args.epochs + 1):
    model.train()
    t0 = time.time()
    order = torch.randperm(len(train_y))
    for i in range(0, len(order), 64):
      idx = order[i:i + 64]
      optimizer.zero_grad()
      loss = F.nll_loss(model(train_x[idx]), train_y[idx])
      loss.backward()
      optimizer.step()
    train_s = time.time() - t0
    scheduler.step()
    model.eval()
    correct = 0
    with torch.no_grad():
      for i in range(0, len(test_y), 1000):
        correct += int((model(test_x[i:i + 1000]).argmax(1) == test_y[i:i + 1000]).sum())
    accuracy = correct / len(test_y)
    since_start = time.time() - START
    print(f'epoch {epoch}: test accuracy {100 * accuracy:.2f} %, train {train_s:.1f} s '
          f'({len(train_y) / train_s:.0f} images/s), {since_start:.1f} s since start',
          flush=True)
    if reached is None and accuracy >= args.target:
      reached = (epoch, since_start)
      break
  cpu = platform.processor() or 'CPU'
  if reached:
    print(f'PyTorch {torch.__version__} ({torch.get_num_threads()} threads, {cpu}, '
          f'{os.cpu_count()} cores): {100 * args.target:.1f} % after epoch {reached[0]}, '
          f'{reached[1]:.1f} s from process start')
  else:
    print(f'{100 * args.target:.1f} % not reached in {args.epochs} epochs')


if __name__ == '__main__':
  main()
