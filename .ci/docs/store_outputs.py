"""Execute notebooks top to bottom and store their outputs (figures included), so GitHub and the docs site show them.

    .venv/bin/python .ci/docs/store_outputs.py nbs/09_vis.ipynb nbs/40_metrics.ipynb ...   (every notebook: nbs/*.ipynb)

- Cells that `nbdev-test` skips are skipped here too, and keep no output: `#| slow` (long work, and the cells that
  rewrite shipped files) and `#| eval: false`. A plain `jupyter nbconvert --execute` would run them.
- The kernel starts in `nbs/` with PYTHONHASHSEED=0; the notebooks seed their own random numbers, so a second run
  gives the same outputs on the same machine and library versions.
- Progress bars are dropped (tqdm widgets and stderr bars hold timings and random widget ids), as is the widget state.
- Then `nbdev-clean` (which keeps outputs; CI checks that it changes nothing).
A cell that raises stops the notebook and the script (exit 1): a notebook is never stored with an error output."""
import os, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = re.compile(r'^\s*#\|\s*(slow\s*$|eval\s*:\s*false)', re.M | re.I)
BAR = re.compile(r'\d+%\|.*\|\s*\d+/\d+|\d+/\d+ \[\d\d:\d\d')


def is_progress(out) -> bool:
    "A tqdm progress bar: a widget, or a stderr stream whose every line is a bar."
    if out.get('output_type') in ('display_data', 'execute_result'):
        return 'application/vnd.jupyter.widget-view+json' in out.get('data', {})
    if out.get('output_type') == 'stream' and out.get('name') == 'stderr':
        lines = [l.split('\r')[-1] for l in out.get('text', '').split('\n')]
        lines = [l for l in lines if l.strip()]
        return bool(lines) and all(BAR.search(l) for l in lines)
    return False


def store(path:Path, timeout:int=1800):
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != 'code': continue
            if SKIP.search(cell.source): cell.outputs = []; continue
            client.execute_cell(cell, i)
            cell.outputs = [o for o in cell.outputs if not is_progress(o)]
    nb.metadata.pop('widgets', None)
    nbformat.write(nb, path)


def main(paths:list):
    os.environ['PYTHONHASHSEED'] = '0'  # inherited by the kernel
    for p in paths:
        p = Path(p).resolve()
        print(f'store_outputs: {p.relative_to(ROOT)}', flush=True)
        try: store(p)
        except Exception as e:
            print(f'error: {p.name}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__}', file=sys.stderr)
            sys.exit(1)
        subprocess.run([str(ROOT / '.venv' / 'bin' / 'nbdev-clean'), '--fname', str(p)], cwd=ROOT, check=True)


if __name__ == '__main__':
    if len(sys.argv) < 2: sys.exit(__doc__)
    main(sys.argv[1:])
