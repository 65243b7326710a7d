import sys

try:
    from .cli import run
except KeyboardInterrupt:  # Ctrl-C while the command line itself is still being imported
    print("neurodeploy: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

run()
