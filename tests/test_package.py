"""The package's shape: role subpackages, a public top level, imports that go one way, and no side effects at import.

- every module of `sg2im_nb` imports, and each public name of `sg2im_nb` resolves to what its module defines;
- no module outside `sg2im_nb.reference` imports `sg2im_nb.reference` (the baseline and the benchmark stay apart);
- importing every module changes no torch setting (AOTAutograd, dynamo and inductor configs, backends, threads,
  default dtype, grad mode, deterministic algorithms), checked in a fresh interpreter."""
import ast, json, subprocess, sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / 'sg2im_nb'


def modules() -> list:
    "Every module of the package, as a dotted name (from the files, so a module that fails to import is still listed)."
    out = []
    for p in sorted(PKG.rglob('*.py')):
        rel = p.relative_to(REPO).with_suffix('')
        parts = rel.parts[:-1] if rel.name == '__init__' else rel.parts
        out.append('.'.join(parts))
    return out


def test_subpackages_by_role():
    for sub in ('model', 'train', 'data', 'eval', 'editor', 'reference'):
        assert (PKG / sub / '__init__.py').exists(), f'sg2im_nb.{sub} is not a package'
    top = sorted(p.stem for p in PKG.glob('*.py') if not p.stem.startswith('_'))
    assert top == ['checkpoint', 'cli', 'inference', 'precision', 'scene_graph', 'vis'], top


def test_public_names():
    import sg2im_nb, importlib
    assert sg2im_nb.__all__, 'sg2im_nb re-exports nothing'
    for name in sg2im_nb.__all__:
        obj = getattr(sg2im_nb, name)
        assert getattr(importlib.import_module(obj.__module__), name) is obj, name
    try: sg2im_nb.no_such_name
    except AttributeError as e: assert 'no_such_name' in str(e)
    else: raise AssertionError('an unknown name must raise AttributeError')


def _imported_modules(path:Path, module:str) -> set:
    "The absolute names of the sg2im_nb modules that the file at `path` (module `module`) imports."
    tree, out = ast.parse(path.read_text()), set()
    pkg = module.split('.') if path.name == '__init__.py' else module.split('.')[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import): out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level: base = '.'.join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
            out |= {base} | {f'{base}.{a.name}' for a in node.names}
    return {m for m in out if m.startswith('sg2im_nb')}


def test_nothing_outside_reference_imports_it():
    offenders = [(m, i) for m in modules() if not m.startswith('sg2im_nb.reference')
                 for i in _imported_modules(REPO / (m.replace('.', '/') + ('/__init__.py' if (REPO / m.replace('.', '/')).is_dir() else '.py')), m)
                 if i.startswith('sg2im_nb.reference')]
    assert not offenders, offenders


def test_import_resolution_sees_relative_imports():
    "The import scanner itself: a relative import inside a subpackage resolves to its absolute name."
    found = _imported_modules(PKG / 'reference' / 'bench.py', 'sg2im_nb.reference.bench')
    assert 'sg2im_nb.reference.published' in found, found


SNAPSHOT = r'''
import json, torch
def snap():
    import torch._functorch.config as fc, torch._dynamo.config as dc, torch._inductor.config as ic
    def cfg(m): return {k: repr(v) for k, v in m.get_config_copy().items()}
    return {'functorch': cfg(fc), 'dynamo': cfg(dc), 'inductor': cfg(ic),
            'threads': torch.get_num_threads(), 'dtype': str(torch.get_default_dtype()),
            'grad': torch.is_grad_enabled(), 'deterministic': torch.are_deterministic_algorithms_enabled(),
            'matmul': torch.get_float32_matmul_precision(), 'cudnn': [torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic],
            'mkldnn': torch.backends.mkldnn.enabled, 'anomaly': torch.is_anomaly_enabled(),
            'autocast_cache': torch.is_autocast_cache_enabled()}
before = snap()
import importlib
for m in MODULES: importlib.import_module(m)
after = snap()
diff = {k: [(n, before[k][n], after[k][n]) for n in before[k] if before[k][n] != after[k].get(n)] if isinstance(before[k], dict)
        else (before[k], after[k]) for k in before if before[k] != after[k]}
print(json.dumps(diff))
'''


def test_import_changes_no_torch_setting():
    mods = [m for m in modules() if m != 'sg2im_nb._modidx']
    code = SNAPSHOT.replace('MODULES', repr(mods))
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    diff = json.loads(res.stdout.strip().splitlines()[-1])
    assert diff == {}, f'importing sg2im_nb changed torch settings: {diff}'


def test_snapshot_sees_a_changed_setting():
    "The check above can fail: a module that flips donated_buffer at import is caught."
    code = SNAPSHOT.replace('MODULES', '[]').replace('after = snap()',
                            'import torch._functorch.config as _f; _f.donated_buffer = not _f.donated_buffer\nafter = snap()')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'donated_buffer' in res.stdout
