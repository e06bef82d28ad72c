#!/bin/sh
# Every install step of the container image, one step per call: the Dockerfile RUNs these and
# CI runs the very same RUN lines, read from the Dockerfile, into a temporary directory
# (tests/deploy/test_container.py).
#
#   install.sh uv DIR            uv (the version ./dev uses, hash-pinned) into a venv at DIR
#   install.sh dependencies DIR  the gateway's runtime dependencies from uv.lock, into a venv at DIR
#   install.sh gateway DIR       the gateway itself (a wheel built from this checkout) into DIR
#   install.sh demo DIR          the demo MCP server's environment (`mcp` as locked) into DIR
#
# Run it from the build context's root (pyproject.toml, uv.lock, README.md, gateway/,
# deploy/docker/). `uv` is found on PATH, after `install.sh uv` puts DIR/bin there. PYTHON is the
# interpreter the venvs are built on (default: python3); uv never downloads one. Lock and hashes
# are enforced throughout: a stale uv.lock or a mismatching download fails the step.
set -eu

usage() {
    echo "usage: $0 uv|dependencies|gateway|demo DIR" >&2
    exit 2
}

[ "$#" -eq 2 ] || usage
step=$1
target=$2
python=${PYTHON:-python3}
export UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1 UV_LINK_MODE=copy

case $step in
uv)
    "$python" -m venv "$target"
    "$target/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --require-hashes --requirement deploy/docker/uv-requirements.txt
    ;;
dependencies)
    # Only what the gateway needs at run time (no dev group), exactly as locked, with hashes;
    # with the `otel` extra, so the image can trace (`tracing.enabled`).
    UV_PROJECT_ENVIRONMENT=$target uv sync --locked --no-dev --no-install-project \
        --extra otel --compile-bytecode --python "$python" --quiet
    ;;
gateway)
    # A regular (non-editable) install: the venv then holds the package and the
    # `mcp-auth-gateway` command, and the image needs nothing else from the checkout.
    wheels=$(mktemp -d)
    trap 'rm -rf "$wheels"' EXIT
    uv build --wheel --out-dir "$wheels" --python "$python" --quiet \
        --build-constraints deploy/docker/build-constraints.txt --require-hashes .
    uv pip install --python "$target/bin/python" --no-deps --compile-bytecode --quiet \
        "$wheels"/*.whl
    uv pip check --python "$target/bin/python" --quiet
    ;;
demo)
    # `mcp` is a dev dependency (tests and the demo), so it is installed on its own here: the
    # version and hashes of it and of everything it pulls in come from uv.lock.
    locked=$(mktemp)
    trap 'rm -f "$locked"' EXIT
    uv export --locked --all-groups --no-emit-project --no-header --no-annotate --quiet \
        --output-file "$locked"
    mcp=$(grep -o '^mcp==[^ ]*' "$locked")
    uv venv --python "$python" --quiet "$target"
    uv pip install --python "$target/bin/python" --require-hashes --constraint "$locked" \
        --compile-bytecode --quiet "$mcp"
    ;;
*)
    usage
    ;;
esac
