"""The PyTorch examples/mnist recipe, timed from process start to >= 99 % test accuracy.

  pip install torch numpy          # in its own environment; mnist_jax is not needed
  python experiments/pytorch_reference.py --data_dir=../shared/data/mnist [--epochs=14]

The recipe of github.com/pytorch/examples/blob/main/mnist/main.py: conv 3x3x32
-> ReLU -> conv 3x3x64 -> ReLU -> max-pool 2 -> dropout 0.25 -> Dense 128 ->
ReLU -> dropout 0.5 -> Dense 10 -> log-softmax, NLL loss, Adadelta (lr 1.0),
StepLR (gamma 0.7 per epoch), batch 64, test batch 1000, inputs normalized with
mean 0.1307 and std 0.3081, seed 1, torch's default threads.

``--loader=dataloader`` (default) feeds the training set as the original does:
a torch DataLoader (batch 64, shuffle, no workers) over a dataset that turns each
image into a PIL image and then into a normalized tensor, as torchvision's
MNIST + ToTensor + Normalize do (torchvision itself is not needed).
``--loader=tensor`` slices batches from normalized tensors held in memory:
faster than the original, a lower bound for it. Prints one line per epoch and,
at the end, the seconds from process start to the first test evaluation >= --target.
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
from PIL import Image


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


def _find(data_dir, split, kind):
  prefix = 'train' if split == 'train' else 't10k'
  return os.path.join(data_dir, next(n for n in sorted(os.listdir(data_dir))
                                     if n.startswith(f'{prefix}-{kind}')))


def load(data_dir, split):
  x = torch.from_numpy(read_idx(_find(data_dir, split, 'images')).astype(np.float32) / 255.0)
  x = ((x - 0.1307) / 0.3081).unsqueeze(1)                 # ToTensor + Normalize
  return x, torch.from_numpy(read_idx(_find(data_dir, split, 'labels')).astype(np.int64))


class PerImage(torch.utils.data.Dataset):
  """torchvision.datasets.MNIST + ToTensor + Normalize, per image: uint8 ->
  PIL 'L' image -> float tensor / 255 -> (x - 0.1307) / 0.3081."""

  def __init__(self, images, labels):
    self.images, self.labels = images, labels

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, i):
    img = Image.fromarray(self.images[i], mode='L')
    x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).unsqueeze(0)
    return (x - 0.1307) / 0.3081, int(self.labels[i])


def batches(loader, train_x, train_y, raw):
  """The epoch's (x, y) batches of 64."""
  if loader == 'dataloader':
    return torch.utils.data.DataLoader(PerImage(*raw), batch_size=64, shuffle=True)
  order = torch.randperm(len(train_y))
  return ((train_x[order[i:i + 64]], train_y[order[i:i + 64]])
          for i in range(0, len(order), 64))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--data_dir', required=True)
  parser.add_argument('--epochs', type=int, default=14)
  parser.add_argument('--target', type=float, default=0.99)
  parser.add_argument('--loader', choices=('dataloader', 'tensor'), default='dataloader')
  args = parser.parse_args()
  torch.manual_seed(1)
  train_x, train_y = load(args.data_dir, 'train')
  raw = (read_idx(_find(args.data_dir, 'train', 'images')),
         read_idx(_find(args.data_dir, 'train', 'labels')))
  test_x, test_y = load(args.data_dir, 'test')
  model = Net()
  optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
  scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
  reached = None
  for epoch in range(1, args.epochs + 1):
    model.train()
    t0 = time.time()
    for x, y in batches(args.loader, train_x, train_y, raw):
      optimizer.zero_grad()
      loss = F.nll_loss(model(x), y)
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
    print(f'PyTorch {torch.__version__} ({args.loader} loader, {torch.get_num_threads()} '
          f'threads, {cpu}, {os.cpu_count()} cores): {100 * args.target:.1f} % after epoch '
          f'{reached[0]}, '
          f'{reached[1]:.1f} s from process start')
  else:
    print(f'{100 * args.target:.1f} % not reached in {args.epochs} epochs')


if __name__ == '__main__':
  main()
