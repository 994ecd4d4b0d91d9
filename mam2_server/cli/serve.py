"""`mam2 serve`: the matting server host plugins talk to (ZeroMQ, protocol in docs/protocol.md).

Binds tcp://127.0.0.1:5557 by default and serves only the user who started it
(a client logs in with the token in --token-file, in the connection's handshake). Any non-loopback address needs
CURVE keys (`mam2 keys DIR`, then `--curve DIR`). Stops cleanly on Ctrl-C, SIGTERM or a
`shutdown` request (or when the --exit-with process ends). Alphas are cached in --cache-dir, so a restarted server
serves every finished frame again without recomputing it.

On a GPU node shared by several artists, run one server per GPU, each with its own port and
`--device cuda:N` (docs/farm.md); a --device this machine does not have stops the server at once.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import re
from pathlib import Path

from host_plugins.mam2_client import wire
from mam2_server.cli import CLIError

log = logging.getLogger(__name__)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'4G', '512M', '1.5GiB', '1000000' -> bytes."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"a size like 4G, 512M or 1000000 (bytes), got {text!r}")
    return int(float(m.group(1)) * 1024 ** "_KMGT".index((m.group(2) or "_").upper()))


def register(subparsers: argparse._SubParsersAction) -> None:
    from mam2_server.cli.matte import add_engine_arguments
    parser = subparsers.add_parser("serve", help="run the matting server for host plugins", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default=wire.DEFAULT_ADDRESS,
                        help=f"ZeroMQ address to bind (default {wire.DEFAULT_ADDRESS}; port 0 picks a free one)")
    add_engine_arguments(parser)
    parser.add_argument("--engine-factory", metavar="MODULE:FUNCTION",
                        help="build the engine with FUNCTION(EngineConfig) from an importable module instead of "
                             "--engine (custom or test engines)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "mam2" / "server",
                        help="spilled frames and finished alphas (default ~/.cache/mam2/server)")
    parser.add_argument("--memory-budget", type=parse_size, default=parse_size("4G"),
                        help="bytes of frames and masks held in memory across shots before the least recently "
                             "used shots are evicted (default 4G)")
    parser.add_argument("--spill-compression", default="none", choices=("none", "zip", "zips", "piz", "rle"),
                        help="EXR compression of received raw frames on disk: none is fastest (1080p half RGB "
                             "12 MB/frame), zip is smaller but ~4x slower to write (default none)")
    parser.add_argument("--max-message", type=parse_size, default=wire.MAX_MESSAGE_BYTES,
                        help="largest message accepted (header and buffers); ZeroMQ drops the connection of a "
                             "client that sends a larger single frame (default 1G)")
    parser.add_argument("--max-file", type=parse_size, metavar="SIZE",
                        help="largest file a 'path' frame or mask may name (default: --max-message)")
    parser.add_argument("--file-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="time to read a file a client names before it is refused (default 10)")
    parser.add_argument("--token-file", type=Path, metavar="PATH",
                        help="the secret clients must send, created 0600 if missing (default $MAM2_TOKEN_FILE, "
                             "else ~/.cache/mam2/token); not used with --curve")
    parser.add_argument("--curve", type=Path, metavar="DIR", help="CURVE key directory from `mam2 keys`")
    parser.add_argument("--allow-path", type=Path, action="append", metavar="DIR",
                        help="only read 'path' frames below DIR (repeatable; default: any readable file on a "
                             "loopback address, none on any other)")
    parser.add_argument("--exit-with", type=int, metavar="PID",
                        help="shut down when process PID exits (host plugins pass their own pid, so a server they "
                             "started never outlives them)")
    parser.set_defaults(func=run)


def check_device(device: str | None, engine: str | None) -> None:
    """Refuse at once a --device this machine cannot use (instead of failing on the first frame).
    `engine`: a built-in engine's name, None for an --engine-factory one."""
    if device is None or device == "cpu":
        return
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match is None:
        raise CLIError(f"--device takes cpu, cuda or cuda:N, got {device!r}")
    if engine is not None and not _needs_gpu(engine):
        log.warning("--device %s: the %s engine runs on the CPU", device, engine)
        return
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(match.group(1) or 0)
    if index >= count:
        have = f"{count} GPU(s), cuda:0 to cuda:{count - 1}" if count else f"no CUDA device (torch {torch.__version__})"
        raise CLIError(f"--device {device}: this machine has {have}")
    torch.cuda.set_device(index)  # anything that says plain "cuda" means this GPU too


def _needs_gpu(engine: str) -> bool:
    from mam2_server.engines import EngineError, engine_class
    try:
        return engine_class(engine).needs_gpu
    except EngineError:
        return True  # not a known engine: its own errors come when it is built


def build_engine(args: argparse.Namespace):
    from mam2_server.engines import EngineConfig, create_engine
    from mam2_server.engines.identity import content_digest, engine_identity
    config = EngineConfig(name=args.engine, checkpoint=args.checkpoint, device=args.device)
    if not args.engine_factory:
        return create_engine(config), engine_identity(config.name, config.checkpoint)
    module_name, _, func = args.engine_factory.partition(":")
    if not module_name or not func:
        raise CLIError(f"--engine-factory takes MODULE:FUNCTION, got {args.engine_factory!r}")
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, func)
    except (ImportError, AttributeError) as exc:
        raise CLIError(f"--engine-factory {args.engine_factory}: {exc}") from None
    engine = factory(config)
    # the factory's own module is code the results depend on too
    source = getattr(module, "__file__", None)
    own = f":{content_digest(source)}" if source and Path(source).is_file() else ""
    return engine, engine_identity(f"{args.engine_factory}{own}:{engine.name}", config.checkpoint)


def run(args: argparse.Namespace) -> int:
    from mam2_server.server import SecurityError, Server, ServerConfig
    check_device(args.device, None if args.engine_factory else args.engine)
    engine, engine_id = build_engine(args)
    config = ServerConfig(address=args.address, cache_dir=args.cache_dir, memory_budget=args.memory_budget,
                          max_message_bytes=args.max_message, curve_dir=args.curve,
                          spill_compression=args.spill_compression,
                          allowed_roots=[p.resolve() for p in args.allow_path] if args.allow_path else None,
                          max_file_bytes=args.max_file, file_seconds=args.file_timeout, token_file=args.token_file,
                          engine_id=engine_id)
    try:
        server = Server(engine, config)
    except (SecurityError, OSError) as exc:
        raise CLIError(str(exc)) from None
    server.install_signal_handlers()
    if args.exit_with is not None:
        from mam2_server.server.watchdog import process_alive, watch_process
        if not process_alive(args.exit_with):
            raise CLIError(f"--exit-with {args.exit_with}: no such process")
        watch_process(args.exit_with, server.stop, server.stopping)
    quiet = logging.getLogger().getEffectiveLevel() > logging.INFO  # else the INFO log says it
    try:
        server.serve_forever(on_bound=lambda address: print(
            f"mam2 serve: listening on {address} (engine {engine.name}, device {server.handlers.device}); "
            "Ctrl-C stops", flush=True) if quiet else None)
    except SecurityError as exc:  # the address cannot be bound
        raise CLIError(str(exc)) from None
    return 0
