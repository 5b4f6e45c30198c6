"""The editor's JavaScript module (sg2im_nb/editor/static/editor.js) in Chromium, without a kernel: its pure parts
(seeds, the queue, boxes), and the whole editor rendered on a blank page by a stand-in model that records what it
sends (keys, the seed field, a kernel that goes away). Fast: no server, no kernel.

Needs Debian's chromium at /usr/bin/chromium and the `playwright` Python package (`bash .ci/setup_browser`)."""
import json
import pytest
from editor_session import sync_api, browser_marks, browser_page
from sg2im_nb.editor.js import EDITOR_JS, EDITOR_CSS


pytestmark = browser_marks()

NAMES = 'parseSeed, nextSeed, randomSeed, makeQueue, clipBox, moveBox, hitTest, render'
VIEW = {'acks': {}, 'seed': '7', 'image': '', 'svg': '', 'messages': [], 'can_undo': True, 'can_redo': False,
        'object_names': ['sky', 'circle', 'star'], 'predicates': ['above', 'left of'], 'examples': [], 'checkpoints': [['m', 'm']],
        'checkpoint': 'm', 'scene_graph_json': '[]', 'limits': {'objects': 256, 'relationships': 2048}, 'strip': [],
        'objects': [{'id': 3, 'name': 'sky', 'label': 'sky #3', 'color': '#88aaff', 'box': [-0.05, 0, 1.05, 0.6], 'pinned': False, 'mask': None},
                    {'id': 5, 'name': 'circle', 'label': 'circle #5', 'color': '#ffaa88', 'box': [0.4, 0.2, 0.6, 0.4], 'pinned': True, 'mask': None}],
        'relationships': [{'id': 6, 's': 5, 'p': 'above', 'o': 3}], 'focus': None, 'focus_rel': None}


@pytest.fixture(scope='module')
def page(tmp_path_factory):
    with browser_page(sync_api, tmp_path_factory.mktemp('js')) as page:
        page.set_content(f'<html><head><style>{EDITOR_CSS.read_text()}</style></head><body><div id="host"></div></body></html>')
        page.add_script_tag(type='module', content=EDITOR_JS.read_text() + f'\nwindow.T = {{{NAMES}}};')
        page.wait_for_function('() => window.T !== undefined')
        yield page


def js(page, code, arg=None): return page.evaluate(f'(arg) => {{ const {{{NAMES}}} = window.T; {code} }}', arg)


def test_seeds_are_exact_beyond_2_53(page):
    r = js(page, "return [parseSeed('9007199254740993'), parseSeed('-5'), parseSeed('3.7'), parseSeed(''), parseSeed('9223372036854775808'),"
                 " nextSeed('9223372036854775807'), Array.from({length: 200}, randomSeed)];")
    assert r[0] == {'seed': '9007199254740993'} and all('error' in x for x in r[1:5])
    assert r[5] == '0' and len(set(r[6])) == 200 and all(0 <= int(s) < 2**63 for s in r[6])
    assert max(int(s) for s in r[6]) > 2**60                                # random seeds cover the whole range


def test_queue_batches_merges_and_dies(page):
    r = js(page, """const sent = [], q = makeQueue((m) => sent.push(m.actions), () => {});
        q.push({op: 'add_object', name: 'a'}); q.push({op: 'set_box', id: 1, box: [0, 0, .1, .1]}); q.push({op: 'set_box', id: 1, box: [0, 0, .2, .2]});
        q.ack({[q.view]: 1}); const p = q.pending(); q.ack({[q.view]: 2});
        let calls = 0; const d = makeQueue(() => { calls += 1; throw new Error('Cannot send'); }, () => {});
        d.push({op: 'undo'}); d.push({op: 'undo'}); let ran = false; d.whenIdle(() => { ran = true; });
        return {sent, p, end: q.pending(), dead: d.dead, calls, dp: d.pending(), ran};""")
    assert r['sent'] == [[{'op': 'add_object', 'name': 'a'}], [{'op': 'set_box', 'id': 1, 'box': [0, 0, .2, .2]}]]
    assert (r['p'], r['end']) == (1, 0) and (r['dead'], r['calls'], r['dp'], r['ran']) == ('Cannot send', 1, 0, False)


def test_boxes_are_clipped_and_the_smallest_is_taken(page):
    r = js(page, """const items = [{id: 3, box: [-0.05, 0, 1.05, 0.6]}, {id: 5, box: [0.4, 0.2, 0.6, 0.4]}], b = (it) => it.box;
        return [clipBox(items[0].box), moveBox(items[0].box, 'move', 0.3, 0.1), hitTest(items, b, 3, 0.5, 0.3, 0.01),
                hitTest(items, b, 3, 0.1, 0.1, 0.01), moveBox([0.1, 0.1, 0.3, 0.3], 'nw', 0.5, 0.5)];""")
    assert r[0] == [0, 0, 1, 0.6] and r[1] == [0, 0.1, 1, 0.7]
    assert r[2] == {'id': 5, 'mode': 'move'} and r[3] == {'id': 3, 'mode': 'move'} and r[4] == [0.28, 0.28, 0.3, 0.3]


def render(page, view=VIEW):
    "Render the editor on the page with a stand-in model; return nothing (the model is window.M, its messages M.sent)."
    page.evaluate('''(view) => {
        const host = document.getElementById('host'); host.replaceChildren();
        const handlers = {};
        window.M = {sent: [], view, dead: false,
          get: (k) => (k === 'view' ? window.M.view : {}),
          on: (e, f) => { (handlers[e] = handlers[e] || []).push(f); }, off: () => {},
          send: (m) => { if (window.M.dead) throw new Error('Cannot send'); window.M.sent.push(m); },
          emit: (e) => (handlers[e] || []).forEach((f) => f())};
        window.T.render({model: window.M, el: host});
    }''', view)


def test_keys_become_actions(page):
    render(page)
    page.locator('.sg2im-objects li[data-id="5"]').click(position={'x': 30, 'y': 8})
    for k in ('ArrowRight', 'Shift+ArrowDown', 'Delete', 'Control+z', 'Control+Shift+z'): page.keyboard.press(k)
    sent = page.evaluate('() => window.M.sent.map((m) => m.actions)')
    assert sent[0] == [{'op': 'set_box', 'id': 5, 'box': [0.41, 0.2, 0.61, 0.4]}]             # the first goes at once
    # the rest wait for the kernel's answer: a box, the removal, undo (redo is not sent: there is nothing to redo)
    assert sent[1:] == [] and page.locator('.sg2im-editor').get_attribute('data-pending') == '4'
    page.locator('.sg2im-relationships li[data-id="6"] .sg2im-text').click()
    assert page.locator('select.sg2im-subject').input_value() == '5' and page.locator('.sg2im-set-relationship').is_enabled()


def test_the_seed_field_and_a_kernel_that_goes(page):
    render(page)
    field = page.locator('input.sg2im-seed')
    assert field.input_value() == '7'
    field.fill('12x'); field.press('Enter')
    assert 'whole number' in page.locator('.sg2im-seed-error').inner_text() and page.evaluate('() => window.M.sent.length') == 0
    field.fill('9223372036854775807'); field.press('Enter')
    assert page.evaluate('() => window.M.sent[0].actions') == [{'op': 'set_seed', 'seed': '9223372036854775807'}]
    assert page.locator('.sg2im-seed-error').inner_text() == ''
    assert json.loads(page.locator('input.sg2im-box-x').get_attribute('min')) == 0
    page.evaluate('() => { window.M.dead = true; window.M.emit("comm_live_update"); }')
    assert 'kernel behind this editor is gone' in page.locator('.sg2im-status').inner_text()
    assert page.locator('.sg2im-editor button:enabled, .sg2im-editor select:enabled, .sg2im-editor input:enabled').count() == 0
