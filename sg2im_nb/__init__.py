"""sg2im_nb: Image Generation from Scene Graphs (Johnson, Gupta, Fei-Fei, CVPR 2018), as literate notebooks.

The package, by role (each module is exported from one notebook of `nbs/`):

- `sg2im_nb.scene_graph`: vocabularies and JSON scene graphs as tensors; `sg2im_nb.cli`: errors, flags, safe writes
- `sg2im_nb.model`: layers, graph convolution, layout, CRN, the generator (`Sg2ImModel`), the discriminators
- `sg2im_nb.train`: config, losses, the training step and loop, its run folder, training in minutes
- `sg2im_nb.data`: COCO-Stuff, Visual Genome, the synthetic shapes world, caches, downloads
- `sg2im_nb.eval`: metrics, the shapes classifier, `sg2im-evaluate`, ablations
- `sg2im_nb.editor`: the interactive scene-graph editor and `sg2im-app`
- `sg2im_nb.reference`: the published baseline and the benchmark (nothing else in the package imports it)
- `sg2im_nb.checkpoint`, `sg2im_nb.inference`, `sg2im_nb.vis`, `sg2im_nb.precision`: loading, generating, drawing

The names users need most are importable from the top (`from sg2im_nb import Sg2ImModel, build_model, generate`);
each is imported on first use, so `import sg2im_nb` stays cheap and the editor's widget libraries load only for
`SceneGraphEditor`. This file is written by hand (nbdev exports every other module from the notebooks).
"""
__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    'UserError': 'sg2im_nb.cli',
    'make_vocab': 'sg2im_nb.scene_graph', 'encode_scene_graphs': 'sg2im_nb.scene_graph',
    'Sg2ImModel': 'sg2im_nb.model.generator',
    'load_checkpoint': 'sg2im_nb.checkpoint', 'build_model': 'sg2im_nb.checkpoint', 'save_checkpoint': 'sg2im_nb.checkpoint',
    'load_model': 'sg2im_nb.inference', 'generate': 'sg2im_nb.inference', 'run_model': 'sg2im_nb.inference',
    'draw_scene_graph': 'sg2im_nb.vis',
    'TrainConfig': 'sg2im_nb.train.config',
    'evaluate': 'sg2im_nb.eval.evaluate',
    'SceneGraphEditor': 'sg2im_nb.editor.widget',
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    "Import a public name on first use (PEP 562)."
    if name not in _PUBLIC: raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    import importlib
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__(): return sorted(set(globals()) | set(_PUBLIC))
