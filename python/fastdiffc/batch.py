"""Batch compression and decompression of folders (docs/design.md §7, issue 16).

`fastdiffc compress DIR -o OUTDIR [...]` / `fastdiffc decompress DIR -o OUTDIR [...]`:

- every image under DIR (recursively) becomes OUTDIR/<same relative path>.fdc; every .fdc
  file (and, with --pipeline, every plain image file) becomes OUTDIR/<relative path>.png;
- **resumable**: an output that exists and parses completely (.fdc: every segment and the
  checksum; PNG: every chunk's CRC) is skipped; outputs are written to `<name>.part` and
  renamed, so an interrupted batch never leaves a half-written output under the final name.
  OUTDIR/.fastdiffc-batch.json records the batch's settings: resuming with other settings
  (pipeline, model, seed, knobs) is refused instead of mixing two batches' files;
- **one worker = one image in flight**: the driver reads a file, hands its bytes to a worker
  and writes what comes back, with at most one file per worker outstanding, so memory stays
  bounded whatever the folder's size. Workers are local processes (`--jobs N`, default: one
  per CPU) or Ray tasks (`--ray auto|local|ADDRESS`, the `cluster` extra), one task per file
  (Ray schedules them; inputs and outputs travel through its object store, so nodes need no
  shared file system, only fastdiffc installed);
- **identical bytes**: a worker runs exactly the single-file command's code (load, compress or
  decompress, PNG encoding). The encoder's bytes depend on the model's outputs, so every
  worker pins its threads: torch intra-op and OpenMP threads = --threads (default: CPUs /
  jobs locally, 1 per Ray task) and FASTDIFFC_MODEL_THREADS (pipelines.base.model_threads)
  = the driver's FASTDIFFC_MODEL_THREADS if set, else that same count. The shipped models
  give the same bytes at any thread count; set FASTDIFFC_MODEL_THREADS for the single-file
  command too if a model of yours does not. A pipeline whose `precision` defaults to "auto"
  gets the driver's resolved precision, so nodes with and without bfloat16 hardware agree;
- **errors**: a file that fails is reported once at the end (one line each) and the command
  exits 1; the other files go on.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

COMPRESS, DECOMPRESS = "compress", "decompress"
MANIFEST = ".fastdiffc-batch.json"
PART = ".part"


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs (picklable; the same object goes to every worker)."""

    mode: str
    pipeline: str | None
    model: str | None
    seed: int
    knob_text: dict = field(default_factory=dict)  # {"knob_steps": "2", ...}: the flags as given
    codec_settings: dict = field(default_factory=dict)  # extra constructor settings (resolved precision)
    threads: int = 1  # torch intra-op and OpenMP threads per worker
    model_threads: int = 1  # FASTDIFFC_MODEL_THREADS per worker

    def manifest(self) -> dict:
        """What makes two batches' outputs interchangeable (not jobs or threads)."""
        d = asdict(self)
        for k in ("threads", "model_threads"):
            d.pop(k)
        return d


@dataclass(frozen=True)
class Item:
    src: Path  # absolute input
    rel: str  # input path relative to the input folder (what errors and the bar show)
    dst: Path  # final output


# --- planning ---------------------------------------------------------------------------------

def _image_suffixes() -> set[str]:
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def plan(mode: str, in_dir: Path, out_dir: Path, take_images: bool) -> list[Item]:
    """The files to process, in a stable order (sorted relative paths); hidden files and
    folders and anything inside `out_dir` are left out. ValueError when two inputs would
    write the same output (a.png and a.jpg both → a.fdc)."""
    images = _image_suffixes()
    out_ext = ".fdc" if mode == COMPRESS else ".png"
    out_abs = out_dir.resolve()
    items, by_dst = [], {}
    for path in sorted(in_dir.rglob("*")):
        rel = path.relative_to(in_dir)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if out_abs == path.resolve().parent or out_abs in path.resolve().parents:
            continue
        ext = path.suffix.lower()
        wanted = ext in images if mode == COMPRESS else (ext == ".fdc" or (take_images and ext in images))
        if mode == COMPRESS and ext == ".fdc":
            wanted = False
        if not wanted:
            continue
        dst = out_dir / rel.with_suffix(out_ext)
        if dst in by_dst:
            raise ValueError(f"{by_dst[dst]} and {rel.as_posix()} would both be written to {dst}: "
                             "rename one of them")
        by_dst[dst] = rel.as_posix()
        items.append(Item(path, rel.as_posix(), dst))
    return items


def is_complete(mode: str, path: Path) -> bool:
    """Whether an existing output is whole: an .fdc file parses with its checksum, a PNG
    passes Pillow's verify (every chunk's CRC)."""
    try:
        if mode == COMPRESS:
            from .container import read

            read(path.read_bytes())
            return True
        from PIL import Image

        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:
        return False


def _check_manifest(out_dir: Path, settings: Settings, overwrite: bool) -> None:
    path = out_dir / MANIFEST
    want = settings.manifest()
    if path.exists() and not overwrite:
        try:
            have = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            have = None
        if have != want:
            diff = ", ".join(f"{k}={have.get(k)!r} (now {want[k]!r})" for k in want
                             if isinstance(have, dict) and have.get(k) != want[k]) or "unreadable"
            raise ValueError(f"{out_dir} holds a batch made with other settings ({diff}): choose another -o, "
                             "or pass --overwrite to redo every file with the new ones")
    tmp = path.with_name(path.name + PART)
    tmp.write_text(json.dumps(want, indent=1, sort_keys=True))
    os.replace(tmp, path)


# --- the worker side --------------------------------------------------------------------------

_CODECS: dict = {}
_PINNED: tuple | None = None


def _pin_threads(s: Settings) -> None:
    """Torch, OpenMP and model-call threads of this worker process (idempotent)."""
    global _PINNED
    if _PINNED == (s.threads, s.model_threads):
        return
    os.environ["FASTDIFFC_MODEL_THREADS"] = str(s.model_threads)
    os.environ["OMP_NUM_THREADS"] = str(s.threads)
    import torch

    torch.set_num_threads(s.threads)
    try:
        from . import _core

        _core.set_openmp_threads(s.threads)
    except ImportError:
        pass
    _PINNED = (s.threads, s.model_threads)


def _codec(s: Settings, pipeline: str):
    from .pipelines import load_codec

    key = (s.mode, pipeline, s.model, s.seed, tuple(sorted(s.codec_settings.items())))
    if key not in _CODECS:
        extra = dict(s.codec_settings) if s.mode == COMPRESS else {}
        if s.mode == COMPRESS:
            extra["seed"] = s.seed
        _CODECS[key] = load_codec(pipeline, s.model, progress=False, **extra)
    return _CODECS[key]


def _open_image(name: str, data: bytes):
    """image_io.load_image for bytes (same decoding, same one-line errors)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im
    except UnidentifiedImageError:
        raise ValueError(f"{name}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"{name}: {e}") from None


def process(s: Settings, name: str, data: bytes) -> bytes:
    """One file's output bytes: what `fastdiffc compress|decompress FILE -o OUT` writes."""
    from .commands.knobs import knobs_for

    _pin_threads(s)
    ns = argparse.Namespace(**s.knob_text)
    if s.mode == COMPRESS:
        knobs = knobs_for(ns, s.pipeline, "rate")
        image = _open_image(name, data)
        return _codec(s, s.pipeline).compress(image, **knobs)

    from .commands.decompress import _pipeline, decompress_with_hints
    pipeline = _pipeline(data, s.pipeline)
    knobs = knobs_for(ns, pipeline, "decode")
    image = decompress_with_hints(_codec(s, pipeline), data, knobs)
    buf = io.BytesIO()
    image.save(buf, format="PNG")  # what image.save("x.png") writes
    return buf.getvalue()


def process_safe(s: Settings, name: str, data: bytes) -> tuple[bool, bytes | str]:
    """`process` with any error turned into its one-line message (exceptions need not pickle)."""
    try:
        return True, process(s, name, data)
    except Exception as e:  # noqa: BLE001 - every per-file error is reported, none stops the batch
        from .cli import one_line

        return False, one_line(e)


def _ray_task(s: Settings, name: str, data: bytes):
    return process_safe(s, name, data)


# --- runners: yield (item, ok, bytes-or-message) in completion order ---------------------------

Result = tuple[Item, bool, "bytes | str"]


@contextmanager
def _pinned_here(s: Settings):
    """Run workers' code in this process, then restore its thread settings and environment."""
    global _PINNED
    import torch

    env = {k: os.environ.get(k) for k in ("FASTDIFFC_MODEL_THREADS", "OMP_NUM_THREADS")}
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        torch.set_num_threads(threads)
        _PINNED = None


def run_inline(s: Settings, items: list[Item]) -> Iterator[Result]:
    with _pinned_here(s):
        for item in items:
            ok, out = process_safe(s, item.rel, item.src.read_bytes())
            yield item, ok, out


def _pool_init(s: Settings) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    _pin_threads(s)


def run_pool(s: Settings, items: list[Item], jobs: int) -> Iterator[Result]:
    """Local worker processes (spawned: no forked OpenMP state). A worker that dies (killed,
    out of memory) fails the files in flight, not the batch: the pool is restarted."""
    import multiprocessing as mp

    todo = list(reversed(items))
    ctx = mp.get_context("spawn")
    while todo:
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_pool_init, initargs=(s,))
        inflight = {}
        broken = aborted = False
        try:
            while todo or inflight:
                while todo and len(inflight) < jobs and not broken:
                    item = todo.pop()
                    inflight[pool.submit(process_safe, s, item.rel, item.src.read_bytes())] = item
                if not inflight:
                    break
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    item = inflight.pop(fut)
                    try:
                        ok, out = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        ok, out = False, "a worker process died with this file in flight (killed or out of memory?)"
                    yield item, ok, out
        except GeneratorExit:  # the driver stopped early (Ctrl-C): do not wait for the images in flight
            aborted = True
            raise
        finally:
            if aborted:
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()
            pool.shutdown(wait=not (broken or aborted), cancel_futures=True)


def run_ray(s: Settings, items: list[Item], address: str) -> Iterator[Result]:
    """One Ray task per file, at most one per CPU slot of the cluster outstanding."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: pip install 'fastdiffc[cluster]'") from None
    started = False
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        started = True
    try:
        task = ray.remote(num_cpus=s.threads)(_ray_task)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // s.threads))
        todo = list(reversed(items))
        inflight = {}
        while todo or inflight:
            while todo and len(inflight) < slots:
                item = todo.pop()
                inflight[task.remote(s, item.rel, item.src.read_bytes())] = item
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            item = inflight.pop(ref)
            try:
                ok, out = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - a worker crash or a lost node fails this file only
                ok, out = False, f"Ray task failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            yield item, ok, out
    finally:
        if started:
            ray.shutdown()


# --- the driver -------------------------------------------------------------------------------

def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _positive(value, flag: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"{flag} must be a positive integer, got {value!r}")
    return n


def settings_from_args(args, mode: str, jobs: int) -> Settings:
    from .pipelines import codec_class

    knob_text = {k: v for k, v in vars(args).items() if k.startswith("knob_") and v is not None}
    pipeline = args.pipeline
    codec_settings = {}
    if mode == COMPRESS:
        from .commands.knobs import knobs_for

        knobs_for(args, pipeline, "rate")  # a flag the pipeline lacks fails before any work
        param = inspect.signature(codec_class(pipeline)).parameters.get("precision")
        if param is not None and param.default == "auto":
            from .precision import resolve

            codec_settings["precision"] = resolve("auto")
    elif pipeline is not None:
        from .commands.knobs import knobs_for

        knobs_for(args, pipeline, "decode")
    if args.global_threads is not None:
        threads = _positive(args.global_threads, "--threads")
    else:
        threads = 1 if args.ray else max(1, _cpus() // jobs)
    env = os.environ.get("FASTDIFFC_MODEL_THREADS")
    model_threads = _positive(env, "FASTDIFFC_MODEL_THREADS") if env else threads
    return Settings(mode, pipeline, args.model, getattr(args, "seed", 0), knob_text, codec_settings,
                    threads, model_threads)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + PART)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def run(args, mode: str) -> int:
    """The batch command: process every file of args.input into args.output (folders)."""
    from tqdm import tqdm

    in_dir, out_dir = Path(args.input), Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: the input is a folder, so -o must be a folder too")
    if out_dir.resolve() == in_dir.resolve():
        raise ValueError("-o must be another folder than the input")
    jobs = _positive(args.jobs, "--jobs") if args.jobs is not None else _cpus()
    items = plan(mode, in_dir, out_dir, take_images=args.pipeline is not None)
    if not items:
        what = "image files" if mode == COMPRESS else ".fdc files" + (" or image files" if args.pipeline else "")
        raise ValueError(f"no {what} found under {in_dir}")
    jobs = min(jobs, len(items))
    settings = settings_from_args(args, mode, jobs)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_manifest(out_dir, settings, args.overwrite)
    for stale in out_dir.rglob("*" + PART):  # left by a killed run
        stale.unlink(missing_ok=True)
    todo = [it for it in items if args.overwrite or not (it.dst.exists() and is_complete(mode, it.dst))]
    skipped = len(items) - len(todo)

    if not todo:
        runner = iter(())
    elif args.ray:
        runner = run_ray(settings, todo, args.ray)
    elif jobs == 1:
        runner = run_inline(settings, todo)
    else:
        runner = run_pool(settings, todo, jobs)

    failures, written, nbytes = [], 0, 0
    start = time.monotonic()
    bar = tqdm(total=len(items), initial=skipped, unit="file", dynamic_ncols=True, disable=args.quiet,
               desc=mode)
    try:
        for item, ok, out in runner:
            if ok:
                try:
                    _write(item.dst, out)
                    written, nbytes = written + 1, nbytes + len(out)
                except OSError as e:
                    failures.append((item.rel, f"cannot write {item.dst}: {e.strerror or e}"))
            else:
                failures.append((item.rel, out))
            bar.update(1)
            if failures:
                bar.set_postfix(failed=len(failures))
    except KeyboardInterrupt:
        bar.close()
        print(f"fastdiffc {mode}: interrupted after {written} files; run the same command again to resume",
              file=sys.stderr)
        raise
    finally:
        bar.close()
        close = getattr(runner, "close", None)
        if close is not None:
            close()
    elapsed = time.monotonic() - start
    if not args.quiet:
        where = f"Ray ({args.ray})" if args.ray else f"{jobs} process{'es' if jobs > 1 else ''}"
        print(f"{out_dir}: {written} written ({nbytes} bytes), {skipped} already done, {len(failures)} failed; "
              f"{elapsed:.1f} s on {where}, {settings.threads} thread(s) each", file=sys.stderr)
    for rel, message in failures:
        print(f"fastdiffc {mode}: {rel}: error: {message}", file=sys.stderr)
    return 1 if failures else 0


def add_batch_flags(p: argparse.ArgumentParser) -> None:
    """The flags of a folder input (compress and decompress)."""
    g = p.add_argument_group("folders (INPUT is a folder: batch mode, -o names the output folder)")
    g.add_argument("--jobs", default=None, metavar="N",
                   help="local worker processes, one file in flight each (default: one per CPU)")
    g.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                   help="run one Ray task per file on a cluster (auto: the running cluster, local: start one "
                        "here); needs the cluster extra")
    g.add_argument("--overwrite", action="store_true",
                   help="redo every file, even outputs that exist (default: skip complete outputs)")
