"""Two PyTorch MNIST recipes, timed from process start to >= 99 % test accuracy.

  pip install torch numpy pillow absl-py   # in its own environment; mnist_jax is not needed
  python -m experiments.speed.pytorch_reference --data_dir=$MNIST_DIR [--epochs=14]
  python -m experiments.speed.pytorch_reference --data_dir=$MNIST_DIR --recipe=record \\
      [--seed=0]

``--recipe=record``: the fastest published MNIST recipe we know,
github.com/tuomaso/train_mnist_fast (99.04 % mean test accuracy after ONE epoch,
0.76 s of training on a GTX 1660 Ti), written here from its description: conv
5x5x24 -> max-pool 2 -> ReLU -> conv 3x3x32 -> max-pool 2 -> ReLU -> Dense 256 ->
ReLU -> Dense 10 (no padding: 28 -> 24 -> 12 -> 10 -> 5), cross-entropy; Adam
(lr 1e-2, betas (0.7, 0.9)) with OneCycleLR(max_lr=1e-2, cycle_momentum=False)
over one epoch; batch 256; all 60,000 training images, normalized with (0.1307,
0.3081) and held in memory as tensors, in one fixed shuffled order (torch seed
--seed); one epoch, then the test set. The IDX read and the normalization run
inside the timed region (process start -> the test evaluation).

``--recipe=examples`` (default): the recipe of
github.com/pytorch/examples/blob/main/mnist/main.py: conv 3x3x32
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

START = time.time()   # before the heavy imports: process start, as experiments/speed/benchmark.py

# pylint: disable=g-import-not-at-top,wrong-import-position
import gzip
import os
import platform

import numpy as np
import torch
from absl import app, flags
from torch import nn
import torch.nn.functional as F
from PIL import Image

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder with the four MNIST IDX files.',
                                required=True)
_RECIPE = flags.DEFINE_enum('recipe', 'examples', ['examples', 'record'], 'Which recipe.')
_EPOCHS = flags.DEFINE_integer('epochs', None, 'At most this many epochs (default: 14 '
                               'examples, 1 record).')
_TARGET = flags.DEFINE_float('target', 0.99, 'Test accuracy to reach.')
_SEED = flags.DEFINE_integer('seed', 0, 'Torch seed of --recipe=record.')
_LOADER = flags.DEFINE_enum('loader', 'dataloader', ['dataloader', 'tensor'],
                            'Data path of --recipe=examples.')


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


class RecordNet(nn.Module):
  """train_mnist_fast's final model, as its README describes it."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 24, 5)
    self.conv2 = nn.Conv2d(24, 32, 3)
    self.fc1 = nn.Linear(32 * 5 * 5, 256)
    self.fc2 = nn.Linear(256, 10)

  def forward(self, x):
    x = F.relu(F.max_pool2d(self.conv1(x), 2))
    x = F.relu(F.max_pool2d(self.conv2(x), 2))
    return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def record_recipe(train_x, train_y, epochs, seed):
  """(model, per-epoch training function) of --recipe=record."""
  torch.manual_seed(seed)
  model = RecordNet()
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.7, 0.9))
  steps = (len(train_y) + 255) // 256
  scheduler = torch.optim.lr_scheduler.OneCycleLR(
      optimizer, max_lr=1e-2, total_steps=epochs * steps, cycle_momentum=False)
  order = torch.randperm(len(train_y))             # one fixed shuffled order
  x, y = train_x[order], train_y[order]

  def train_epoch():
    model.train()
    for i in range(0, len(y), 256):
      optimizer.zero_grad()
      F.cross_entropy(model(x[i:i + 256]), y[i:i + 256]).backward()
      optimizer.step()
      scheduler.step()

  return model, train_epoch


def examples_recipe(loader, train_x, train_y, raw):
  """(model, per-epoch training function) of --recipe=examples."""
  torch.manual_seed(1)
  model = Net()
  optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
  scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)

  def train_epoch():
    model.train()
    for x, y in batches(loader, train_x, train_y, raw):
      optimizer.zero_grad()
      F.nll_loss(model(x), y).backward()
      optimizer.step()
    scheduler.step()

  return model, train_epoch


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


def main(argv):
  del argv
  data_dir, recipe, target = _DATA_DIR.value, _RECIPE.value, _TARGET.value
  epochs = _EPOCHS.value or (1 if recipe == 'record' else 14)
  train_x, train_y = load(data_dir, 'train')
  test_x, test_y = load(data_dir, 'test')
  if recipe == 'record':
    model, train_epoch = record_recipe(train_x, train_y, epochs, _SEED.value)
  else:
    raw = (read_idx(_find(data_dir, 'train', 'images')),
           read_idx(_find(data_dir, 'train', 'labels')))
    model, train_epoch = examples_recipe(_LOADER.value, train_x, train_y, raw)
  reached = None
  for epoch in range(1, epochs + 1):
    t0 = time.time()
    train_epoch()
    train_s = time.time() - t0
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
    if reached is None and accuracy >= target:
      reached = (epoch, since_start)
      break
  cpu = platform.processor() or 'CPU'
  if reached:
    how = 'record recipe' if recipe == 'record' else f'{_LOADER.value} loader'
    print(f'PyTorch {torch.__version__} ({how}, {torch.get_num_threads()} '
          f'threads, {cpu}, {os.cpu_count()} cores): {100 * target:.1f} % after epoch '
          f'{reached[0]}, {reached[1]:.1f} s from process start')
  else:
    print(f'{100 * target:.1f} % not reached in {epochs} epochs')


if __name__ == '__main__':
  app.run(main)
