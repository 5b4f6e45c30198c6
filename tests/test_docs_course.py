"""The parts of the documentation (.ci/docs/course.json, read by .ci/docs/course.py): every notebook in exactly one
part, the course's lessons in their order with a promise each, and reading times that match the notebooks."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / '.ci' / 'docs'))
import course

NBS = sorted(p for p in (REPO / 'nbs').glob('*.ipynb') if p.stem != 'index')
LESSONS = ['00_', '02_', '03_', '04_', '05_', '06_', '07_', '21_', '25_', '30_', '31_', '42_']


def test_every_notebook_is_in_exactly_one_part():
    data = course.load()
    twice = {nb.name: course.listed_in(nb.stem, data) for nb in NBS if len(course.listed_in(nb.stem, data)) > 1}
    assert not twice, f'in two parts of course.json: {twice}'
    groups = course.parts(NBS, data)
    placed = [nb for ps in groups.values() for nb in ps]
    assert sorted(placed) == NBS, f'in no part: {sorted(set(NBS) - set(placed))}; more than once: {[p for p in placed if placed.count(p) > 1]}'


def test_the_course_in_order():
    groups = course.parts(NBS)
    assert [course.key(nb.stem) for nb in groups['Course']] == LESSONS
    assert {course.key(nb.stem) for nb in groups['Engineering']} >= {'05a_', '20a_', '21a_', '32_', '50_', '50a_'}
    for e in course.load()['Course']['entries']:
        assert 20 < len(e['promise']) < 160 and not e['promise'].endswith('.'), e  # one line, a sentence without its stop


def test_unlisted_notebooks_follow_the_rule():
    data = course.load()
    assert course.part_of('50b_bench_more', data) == 'Engineering'    # a letter on an Engineering base
    assert course.part_of('13b_vg_more', data) == 'Reference'         # a letter on a Reference base
    assert course.part_of('02b_graph_more', data) == 'Reference'      # a letter on a lesson
    assert course.part_of('77_new_topic', data) == 'Reference'        # no letter
    assert course.part_of('00_scene_graphs', data) == 'Course'        # matched by its number, whatever its name


def test_reading_times_match_the_notebooks():
    "Words / 200 + code lines / 20 per minute, rounded up to 5: stale numbers in course.json fail here."
    groups = course.parts(NBS)
    entries = {course.key(e['notebook']): e for e in course.load()['Course']['entries']}
    stale = [f'{nb.name}: {entries[course.key(nb.stem)]["minutes"]} in course.json, {course.reading_minutes(nb)} now'
             for nb in groups['Course'] if entries[course.key(nb.stem)]['minutes'] != course.reading_minutes(nb)]
    assert not stale, 'run: python .ci/docs/course.py --update\n' + '\n'.join(stale)


def test_the_course_table():
    md = course.course_markdown(REPO / 'nbs', lambda nb: f'https://example.org/{nb.stem}')
    rows = [l for l in md.splitlines() if l.startswith('| [')]
    assert len(rows) == len(LESSONS) and all(r.endswith(' min |') for r in rows)
    assert '**Reference**' in md and '**Engineering**' in md and '(https://example.org/50_bench)' in md
    for e in course.load()['Course']['entries']: assert e['promise'] in md
