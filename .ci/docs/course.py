"""The three parts of the documentation (Course, Reference, Engineering), from .ci/docs/course.json.

- `parts(nbs)`: {part: [notebook paths]}, the course in reading order, the other parts in file order. Every notebook is
  in exactly one part: listed ones where the data file lists them, the rest by the rule written in the data file.
- `reading_minutes(nb)`: words of markdown / 200 per minute + code lines shown / 20 per minute, rounded up to 5.
- `course_markdown(nbs, link)`: the home page's course table (lesson, promise, reading time) and the Reference and
  Engineering lists, as markdown; README can use it too (`link` turns a notebook path into the URL to write).

The promises and minutes live in course.json only. `python .ci/docs/course.py --update` recomputes the minutes there
after the notebooks change; `python .ci/docs/course.py` prints the table."""
import argparse, json, math, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).with_name('course.json')
PARTS = ('Course', 'Reference', 'Engineering')
_re_key = re.compile(r'^(\d+)([a-z]*)_')
_re_directive = re.compile(r'^\s*#\|\s*([\w-]+)')


class CourseError(ValueError): pass


def load(path:Path=DATA) -> dict:
    "{part name: {'about': ..., 'entries': [entry dicts, each with 'notebook']}} in the order of PARTS."
    data = json.loads(path.read_text())
    out = {}
    for part in data['parts']:
        entries = part.get('lessons') or [{'notebook': n} for n in part.get('notebooks', [])]
        for e in entries:
            if not _re_key.match(e['notebook']): raise CourseError(f'{path.name}: {e["notebook"]!r} does not start with a number prefix like 02_')
        out[part['name']] = {'about': part.get('about', ''), 'entries': entries}
    if tuple(out) != PARTS: raise CourseError(f'{path.name}: the parts must be {", ".join(PARTS)}, in that order; found {", ".join(out)}')
    return out


def key(name:str) -> str:
    "The number prefix that names a notebook: `02_graph` -> `02_`, `60a_download_verify` -> `60a_`."
    m = _re_key.match(name)
    return m.group(0) if m else ''


def listed_in(stem:str, data:dict) -> list:
    "The parts whose entries name this notebook."
    return [p for p, part in data.items() if any(key(e['notebook']) == key(stem) for e in part['entries'])]


def part_of(stem:str, data:dict) -> str:
    "The part of a notebook: where it is listed, else Engineering for a letter suffix on an Engineering base, else Reference."
    where = listed_in(stem, data)
    if len(where) > 1: raise CourseError(f'{stem} is in two parts of course.json: {", ".join(where)}')
    if where: return where[0]
    m = _re_key.match(stem)
    if m and m.group(2) and listed_in(m.group(1) + '_', data) == ['Engineering']: return 'Engineering'
    return 'Reference'


def parts(nbs:list, data:dict=None) -> dict:
    "{part: [notebook paths]} for the notebooks given (not index): the course in the data file's order, the rest sorted."
    data = data or load()
    nbs = sorted(p for p in nbs if key(p.stem))
    out = {p: [] for p in PARTS}
    for nb in nbs: out[part_of(nb.stem, data)].append(nb)
    order = [key(e['notebook']) for e in data['Course']['entries']]
    for e in data['Course']['entries']:
        found = [nb for nb in nbs if key(nb.stem) == key(e['notebook'])]
        if len(found) != 1: raise CourseError(f'course.json: the lesson {e["notebook"]!r} matches {len(found)} notebooks, not one')
    out['Course'].sort(key=lambda nb: order.index(key(nb.stem)))
    return out


def reading_minutes(nb_path:Path) -> int:
    "Words of the markdown cells / 200 + non-blank code lines of the cells shown (no `#| hide`) / 20, rounded up to 5 minutes."
    words = lines = 0
    for cell in json.loads(nb_path.read_text())['cells']:
        src = ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
        if cell['cell_type'] == 'markdown': words += len(src.split())
        elif cell['cell_type'] == 'code':
            code = src.splitlines()
            if 'hide' in [m.group(1) for l in code if (m := _re_directive.match(l))]: continue
            lines += sum(1 for l in code if l.strip() and not _re_directive.match(l))
    return 5 * max(1, math.ceil((words / 200 + lines / 20) / 5))


def title(nb_path:Path) -> str:
    "The notebook's `# Title`."
    for cell in json.loads(nb_path.read_text())['cells']:
        if cell['cell_type'] == 'markdown':
            src = ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
            for line in src.splitlines():
                if line.startswith('# '): return line[2:].strip()
    return nb_path.stem


def course_markdown(nbs:Path, link, heading:str='## The course') -> str:
    """The course table (lesson, what you will be able to do, reading time) and the Reference and Engineering lists, as
    markdown. `nbs`: the notebooks' folder; `link(path) -> str`: the URL of a notebook's page."""
    data = load()
    groups = parts(list(nbs.glob('*.ipynb')), data)
    lessons = {key(e['notebook']): e for e in data['Course']['entries']}
    label = lambda nb: f'{nb.stem.split("_")[0]} · {title(nb)}'
    rows = [f'| [{label(nb)}]({link(nb)}) | {lessons[key(nb.stem)]["promise"]} | {lessons[key(nb.stem)]["minutes"]} min |'
            for nb in groups['Course']]
    total = sum(lessons[key(nb.stem)]['minutes'] for nb in groups['Course'])
    out = [heading, '', f'{len(rows)} lessons that teach the paper, in order ({total / 60:.0f} hours of reading):', '',
           '| lesson | what you will be able to do | reading time |', '|---|---|---|', *rows]
    for part in ('Reference', 'Engineering'):
        items = ', '.join(f'[{label(nb)}]({link(nb)})' for nb in groups[part])
        out += ['', f'**{part}**: {data[part]["about"]}. {items}.']
    return '\n'.join(out) + '\n'


def update_minutes(nbs:Path=ROOT / 'nbs', path:Path=DATA) -> list:
    "Recompute the lessons' minutes in the data file; the lessons that changed, as 'notebook: old -> new'."
    text = path.read_text()
    data = load(path)
    found = {key(nb.stem): nb for nb in parts(list(nbs.glob('*.ipynb')), data)['Course']}
    changed = []
    for e in data['Course']['entries']:
        new = reading_minutes(found[key(e['notebook'])])
        if new != e['minutes']:
            changed.append(f'{e["notebook"]}: {e["minutes"]} -> {new}')
            text = re.sub(r'("notebook": "' + re.escape(e['notebook']) + r'", "minutes": )\d+', lambda m: m.group(1) + str(new), text)
    path.write_text(text)
    return changed


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--update', action='store_true', help="recompute the lessons' reading times in course.json")
    args = ap.parse_args()
    try:
        if args.update: print('\n'.join(update_minutes()) or 'course.json: the reading times are up to date')
        else: print(course_markdown(ROOT / 'nbs', lambda nb: f'nbs/{nb.name}'))
    except CourseError as e: raise SystemExit(f'error: {e}')
