# What durability costs a checkpoint: writes two files of the quickstart checkpoint's sizes (model and
# optimizer, 82 MB) with and without fsync of the files and the directory, alternately, five times each.
# Usage: /usr/bin/python3 bench/fsync_cost.py [DIR on the disk to measure]
import os, statistics, sys, time
sizes = [27_300_000, 54_600_000]  # quickstart model.safetensors, optimizer.safetensors (6.8M params, f32)
buf = os.urandom(1 << 20)
def save(d, sync):
    os.makedirs(d, exist_ok=True)
    t = time.perf_counter()
    for i, n in enumerate(sizes):
        fd = os.open(f"{d}/f{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        left = n
        while left > 0:
            left -= os.write(fd, buf[:min(left, len(buf))])
        if sync: os.fsync(fd)
        os.close(fd)
    if sync:
        fd = os.open(d, os.O_RDONLY); os.fsync(fd); os.close(fd)
    return time.perf_counter() - t
for sync in (False, True, False, True):
    ts = [save(fsys.argv[1] if len(sys.argv) > 1 else "build/fsync_probe", sync) for _ in range(5)]
    print("fsync" if sync else "no fsync", f"median {statistics.median(ts)*1e3:.0f} ms", [round(x*1e3) for x in ts])
import shutil; shutil.rmtree(sys.argv[1] if len(sys.argv) > 1 else "build/fsync_probe")
