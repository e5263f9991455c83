"""What reading the MNIST IDX files costs at start-up: gunzip, then the sha256 check.

  python experiments/speed/data_read_cost.py --data_dir=$MNIST_DIR

mnist_jax.data.idx verifies the decompressed bytes of the full MNIST against their
known sha256 (a damaged or truncated download is named, not trained on); this
prints what that check adds to the read, best of --repeats.
"""
import argparse
import gzip
import hashlib
import os
import time

FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
         't10k-labels-idx1-ubyte')


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--data_dir', required=True)
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  read, check, size = [], [], 0
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    raw = []
    for name in FILES:
      path = os.path.join(args.data_dir, name)
      opener = gzip.open if os.path.exists(path + '.gz') else open
      with opener(path + '.gz' if opener is gzip.open else path, 'rb') as f:
        raw.append(f.read())
    t1 = time.perf_counter()
    for data in raw:
      hashlib.sha256(data).hexdigest()
    read.append(t1 - t0)
    check.append(time.perf_counter() - t1)
    size = sum(len(d) for d in raw)
  print(f'{size / 1e6:.1f} MB decompressed: read + gunzip {min(read):.3f} s, '
        f'sha256 {min(check):.3f} s (best of {args.repeats})')


if __name__ == '__main__':
  main()
