"""Run by tests/test_blender_addon.py with a bpy venv's Python (bpy cannot load in the main venv).

    .venv-bpy/bin/python tests/blender_check.py SCENARIO CONFIG.json REPORT.json

Loads the add-on as it ships (laid out by `mam2_server.package.blender.stage_addon`, or the
installed extension), plays one SCENARIO as an artist would and writes what it saw
(statuses, node settings, file lists, rendered EXRs) to REPORT; the test asserts on that.
Background Blender has no event loop: Track runs inline unless a scenario sets
INLINE_IN_BACKGROUND = False and pumps the add-on's timers (`ops.pump`).
"""
import json
import os
import shutil
import sys
import time

SCENARIO, CONFIG, REPORT = sys.argv[1:4]
with open(CONFIG) as fh:
    CFG = json.load(fh)
if CFG.get("hide_venv_modules"):
    from bpy_support import HideVenvModules
    sys.meta_path.insert(0, HideVenvModules())

import bpy  # noqa: E402

from bpy_support import (add_key, alpha_files, alpha_folder, cfg, disable_addon, draw_panel, file_digests,  # noqa: E402
                         links_into, load_addon, node_state, play_draw_prompt, pump_until, render, report, run,
                         set_up_shot)

cfg.update(CFG)
SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def _shot(addon, name="render"):
    """Add-on loaded, a saved .blend with the plate opened, one key (box over the top rows) on scene frame 1."""
    scene, tree, node = set_up_shot(addon, os.path.join(cfg["work"], f"{name}.blend"))
    add_key(1, box=cfg["box"])
    return scene, tree, node


@scenario
def render_matte():
    """The key test: Track with Image > Open's frame mapping, then render the compositor."""
    addon = load_addon()
    scene, tree, node = _shot(addon)
    before = node_state(node)
    scene.view_settings.view_transform = "AgX"  # the view transform must not touch data or EXR renders
    report["track"] = run(bpy.ops.mam2.track)
    s = scene.mam2
    report.update(status=s.status, shot=s.shot, files=alpha_files(s), plate_before=before,
                  plate_after=node_state(node), alpha=node_state(tree.nodes[addon.nodes.ALPHA_NODE]),
                  alpha_path=tree.nodes[addon.nodes.ALPHA_NODE].image.filepath,
                  alpha_colorspace=tree.nodes[addon.nodes.ALPHA_NODE].image.colorspace_settings.name,
                  set_alpha=links_into(tree, addon.nodes.SET_ALPHA_NODE))
    out = links_into(tree, "Group Output" if addon.nodes.NEW_API else "Composite")
    report["output"] = out
    report["renders"] = render(scene, range(1, 7), os.path.join(cfg["work"], "renders"))
    bpy.ops.wm.save_mainfile()
    report["saved_alpha_path"] = bpy.data.images[tree.nodes[addon.nodes.ALPHA_NODE].image.name].filepath
    # 4.x: a comp the add-on turns on has no Render Layers (the 3D scene is not rendered under the
    # matte); a comp the artist had, switched off, keeps theirs
    other = bpy.data.scenes.new("artist comp")
    if not addon.nodes.NEW_API:
        other.use_nodes = True
        other.use_nodes = False
    report["render_layers"] = {sc.name: [n.name for n in addon.nodes.compositor_tree(sc).nodes
                                         if n.bl_idname == "CompositorNodeRLayers"] for sc in (scene, other)}


@scenario
def keys_and_shots():
    """Several keys, each its own prompt; Track never touches the other keys; delete -> remove_prompt;
    the shot id survives Save As and renames; a new file at the same path is a new shot."""
    addon = load_addon()
    scene, tree, node = _shot(addon, "keys")
    s = scene.mam2
    steps = report["steps"] = []

    def track(label):
        result = run(bpy.ops.mam2.track)
        s = bpy.context.scene.mam2
        steps.append({"label": label, "result": result, "status": s.status, "shot": s.shot,
                      "keys": [(k.frame, k.summary()) for k in s.keys], "digests": file_digests(s)})

    track("first")
    add_key(4, box=(10, 5, 40, 30), points=[(60, 20, "BG")])
    track("second key")
    track("again")
    s.keys[0].box_max = (cfg["box"][2] - 4, cfg["box"][3])
    track("first key edited")
    report["outside"] = add_key(9)[0]  # scene frame 9: no plate frame there
    scene.frame_set(4)
    s.active_key = 1
    report["jump"] = [run(bpy.ops.mam2.key_jump), scene.frame_current]
    report["remove"] = run(bpy.ops.mam2.key_remove)
    track("second key deleted")
    uuid = s.shot_uuid
    os.makedirs(os.path.join(cfg["work"], "elsewhere"))
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(cfg["work"], "elsewhere", "renamed.blend"))
    scene.name = "Renamed scene"
    track("save as + rename")
    report["uuid_kept"] = bpy.context.scene.mam2.shot_uuid == uuid
    # what the Image Editor's Draw Prompt does with a drag and clicks (the modal needs a window)
    viewport = addon.viewport
    key = s.keys[0]
    viewport.set_box(key, viewport.view_to_pixel(0.75, 0.75, cfg["width"], cfg["height"]),
                     viewport.view_to_pixel(0.25, 1.5, cfg["width"], cfg["height"]))
    viewport.add_point(key, viewport.view_to_pixel(0.5, 0.5, cfg["width"], cfg["height"]), foreground=True)
    viewport.add_point(key, (3.0, 4.0), foreground=False)
    report["drawn"] = [tuple(key.box_min), tuple(key.box_max), [(tuple(p.co), p.label) for p in key.points],
                       key.summary()]
    # the modal operator itself, fed stand-in events: a drag from the lower left to the upper middle,
    # a click, a Ctrl+click, on a frame with no key yet (file 1003)
    report["draw_modal"] = play_draw_prompt(bpy.types.MAM2_OT_draw_prompt, 1003, [
        ((0.25, 0.25), (0.5, 0.75), False), ((0.75, 0.5), (0.75, 0.5), False), ((0.125, 0.125), (0.125, 0.125), True)])
    drawn = next(k for k in s.keys if k.frame == 1003)
    report["draw_modal_key"] = [tuple(drawn.box_min), tuple(drawn.box_max),
                                [(tuple(p.co), p.label) for p in drawn.points]]
    report["panels"] = {name: draw_panel(name, space) for name, space in (
        ("MAM2_PT_compositor", "NODE_EDITOR"), ("MAM2_PT_image", "IMAGE_EDITOR"),
        ("MAM2_PT_compositor_server", "NODE_EDITOR"))}
    bpy.ops.wm.read_homefile(use_empty=True)  # File > New, saved over the first file's path
    scene, tree, node = _shot(addon, "keys")
    track("new file, same path")
    report["new_uuid"] = bpy.context.scene.mam2.shot_uuid != uuid


@scenario
def colour_and_masks():
    """The plate's colour space reaches open_shot (and the shot id); Mask keys are rasterised on their frames."""
    addon = load_addon()
    scene, tree, node = _shot(addon, "colour")
    s = scene.mam2
    scene.view_settings.view_transform = "AgX"
    scene.view_settings.look = "AgX - Punchy" if addon.nodes.NEW_API else "AgX - Punchy"
    shots = report["shots"] = {}
    for name in ("ACEScg", "Linear Rec.709"):
        s.image.colorspace_settings.name = name
        result = run(bpy.ops.mam2.track)
        shots[name] = [s.shot, s.status, result]

    mask = bpy.data.masks.new("Roto")
    for layer_name, (x0, y0, x1, y1) in cfg["mask_layers"].items():
        layer = mask.layers.new(name=layer_name)
        spline = layer.splines.new()
        spline.points.add(3)
        for point, co in zip(spline.points, ((x0, y0), (x1, y0), (x1, y1), (x0, y1))):
            point.co, point.handle_type = co, "VECTOR"
        spline.use_cyclic = True
    animated = mask.layers[cfg["animated_layer"]]
    animated.alpha = 1.0
    animated.keyframe_insert("alpha", frame=1)
    animated.alpha = 0.0
    animated.keyframe_insert("alpha", frame=4)
    s.keys.clear()
    add_key(1, mask=mask)
    add_key(4, mask=mask)
    scene.frame_set(2)  # the artist's frame, put back after the masks were rasterised on frames 1 and 4
    result = run(bpy.ops.mam2.track)
    report["mask_track"] = [s.shot, s.status, result, scene.frame_current, [k.summary() for k in s.keys]]
    report["scenes_left"] = [sc.name for sc in bpy.data.scenes]

    # an unsaved file: no place next to it, so Track asks for a folder (the file browser fills `directory`)
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.mam2.address, scene.mam2.start_server = cfg["address"], False
    # Blender's Image > Open of all the plate's files: frames 1001-1006 become UDIM tiles
    plates = cfg["plates"]
    bpy.ops.image.open(filepath=os.path.join(plates, "plate.1001.exr"), directory=plates,
                       files=[{"name": f"plate.{f}.exr"} for f in range(1001, 1007)])
    scene.mam2.image = next(i for i in bpy.data.images if i.source == "TILED")
    report["udim"] = run(bpy.ops.mam2.track) + [scene.mam2.status]
    # MAM2's Open Plate, from any frame of it: the sequence, and a node with Image > Open's mapping
    report["open_plate"] = run(bpy.ops.mam2.open_plate, filepath=os.path.join(plates, "plate.1003.exr"))
    tree = addon.nodes.compositor_tree(scene)
    report["opened"] = [scene.mam2.image.source, os.path.basename(scene.mam2.image.filepath),
                        node_state(tree.nodes[scene.mam2.plate_node]),
                        [scene.render.resolution_x, scene.render.resolution_y]]
    add_key(1, box=cfg["box"])
    report["unsaved"] = run(bpy.ops.mam2.track) + [scene.mam2.status]
    folder = os.path.join(cfg["work"], "chosen")
    report["unsaved_folder"] = run(bpy.ops.mam2.track, directory=folder) + [scene.mam2.output_dir, scene.mam2.status]
    report["unsaved_files"] = sorted(os.listdir(os.path.join(folder, scene.mam2.shot)))


@scenario
def live_runs():
    """On the worker thread: live preview, cancel, File > New / Open mid-run, a deleted plate node or
    image mid-run, a second Track, a dead server."""
    addon = load_addon()
    ops = addon.ops
    ops.INLINE_IN_BACKGROUND = False
    scene, tree, node = _shot(addon, "live")
    s = scene.mam2
    # live preview: the alpha node shows finished frames while the rest are computing
    report["start"] = run(bpy.ops.mam2.track)
    run_task = ops.tasks.get(s.shot_uuid)
    report["timer_persistent"] = bool(run_task and bpy.app.timers.is_registered(run_task.timer))
    report["second_start"] = run(bpy.ops.mam2.track)
    pump_until(ops, lambda: len(alpha_files(s)) >= 2)
    ops.pump()
    alpha_node = tree.nodes.get(addon.nodes.ALPHA_NODE)
    report["preview"] = {"running": s.shot_uuid in ops.tasks, "files": alpha_files(s),
                         "alpha_node": alpha_node is not None, "previews": run_task.previews,
                         "status": s.status}
    report["preview_render"] = render(scene, [1], os.path.join(cfg["work"], "renders"), "preview")
    shutil.copy(os.path.join(alpha_folder(s), "alpha.1001.exr"), os.path.join(cfg["work"], "preview_alpha.exr"))
    seen = set()
    pump_until(ops, lambda: s.shot_uuid not in ops.tasks, seen=seen)
    report["finished"] = [s.status, s.running, sorted(seen), run_task.previews]

    # cancel right after starting: the server's alphas are cached, so key edits make new work
    s.keys[0].box_min = (cfg["box"][0] + 2, cfg["box"][1])
    report["cancel"] = [run(bpy.ops.mam2.track), run(bpy.ops.mam2.cancel)]
    pump_until(ops, lambda: s.shot_uuid not in ops.tasks)
    report["cancel"].append(s.status)
    report["cancel_nothing"] = run(bpy.ops.mam2.cancel)

    # the artist deletes the plate node mid-run
    s.keys[0].box_min = (cfg["box"][0] + 4, cfg["box"][1])
    run(bpy.ops.mam2.track)
    pump_until(ops, lambda: alpha_files(s) and "frame" in s.status)
    tree.nodes.remove(node)
    pump_until(ops, lambda: s.shot_uuid not in ops.tasks)
    report["node_deleted"] = {"status": s.status, "set_alpha": links_into(tree, addon.nodes.SET_ALPHA_NODE),
                              "plate": node_state(tree.nodes[addon.nodes.PLATE_NODE])}

    # File > New mid-run, then a Track in the new file; File > Open mid-run
    s.keys[0].box_min = (cfg["box"][0] + 6, cfg["box"][1])
    run(bpy.ops.mam2.track)
    old = ops.tasks.get(s.shot_uuid)
    bpy.ops.wm.read_homefile(use_empty=True)
    report["after_new"] = {"tasks": len(ops.tasks), "old_cancelled": old.cancel.is_set(),
                           "old_timer": bpy.app.timers.is_registered(old.timer)}
    scene, tree, node = set_up_shot(addon, os.path.join(cfg["work"], "second.blend"))
    add_key(1, box=cfg["box"])
    report["new_file_track"] = [run(bpy.ops.mam2.track), scene.mam2.status]
    pump_until(ops, lambda: scene.mam2.shot_uuid not in ops.tasks and old.done)
    report["new_file_track"].append(scene.mam2.status)
    report["old_run_left_new_file_alone"] = [n.name for n in tree.nodes]
    bpy.ops.wm.save_mainfile()
    scene.mam2.keys[0].box_min = (cfg["box"][0] + 8, cfg["box"][1])
    run(bpy.ops.mam2.track)
    old = ops.tasks.get(scene.mam2.shot_uuid)
    bpy.ops.wm.open_mainfile(filepath=bpy.data.filepath)  # File > Revert: the saved key, not the edit
    pump_until(ops, lambda: old.done)
    report["after_open"] = {"tasks": len(ops.tasks), "old_cancelled": old.cancel.is_set(), "old_done": old.done,
                            "scene": bpy.context.scene.mam2.status}

    # the plate image itself removed mid-run
    scene = bpy.context.scene
    s = scene.mam2
    s.keys[0].box_min = (cfg["box"][0] + 10, cfg["box"][1])
    run(bpy.ops.mam2.track)
    pump_until(ops, lambda: "frame" in s.status)
    bpy.data.images.remove(s.image)
    pump_until(ops, lambda: s.shot_uuid not in ops.tasks)
    report["image_deleted"] = s.status

    # a dead server: the error reaches the status
    s.image = bpy.data.images.load(os.path.join(cfg["plates"], "plate.1001.exr"))
    s.image.source = "SEQUENCE"
    s.address = cfg["dead_address"]
    report["dead"] = [run(bpy.ops.mam2.track)]
    pump_until(ops, lambda: s.shot_uuid not in ops.tasks)
    report["dead"].append(s.status)
    ops.INLINE_IN_BACKGROUND = True
    report["dead_inline"] = run(bpy.ops.mam2.track) + [s.status]
    disable_addon()
    report["unregistered"] = not hasattr(bpy.types.Scene, "mam2")


@scenario
def timer_failures():
    """A bug in the timer's drain or result path ends the run with a message (Blender drops a timer that
    raises: the run would never end, every later Track "already tracking"); redraw calls Area.tag_redraw;
    Add Key copies its nearest key even as the key collection grows (reallocates)."""
    from types import SimpleNamespace as NS
    addon = load_addon()
    ops = addon.ops
    ops.INLINE_IN_BACKGROUND = False
    scene, tree, node = _shot(addon, "timer")
    s = scene.mam2

    # redraw in a GUI session: the editors' areas are tagged through Area's real function
    redrawn = []

    def area(kind):
        return NS(type=kind, tag_redraw=lambda: redrawn.append(kind))
    ops.redraw(NS(windows=[NS(screen=NS(areas=[area("NODE_EDITOR"), area("VIEW_3D")])),
                           NS(screen=NS(areas=[area("IMAGE_EDITOR")]))]))
    report["redrawn"] = redrawn
    report["area_functions"] = [f in bpy.types.Area.bl_rna.functions for f in ("tag_redraw", "tagredraw")]

    reports = []
    real_report, real_redraw, real_finish = ops.report_from_timer, ops.redraw, ops.finish
    ops.report_from_timer = lambda level, text: (reports.append([level, text]), real_report(level, text))

    def broken(*_args, **_kw):
        raise AttributeError("'Area' object has no attribute 'tagredraw'")

    def failing_case(label, **patches):
        for name, fn in patches.items():
            setattr(ops, name, fn)
        reports.clear()
        try:
            started = run(bpy.ops.mam2.track)
            task = ops.tasks.get(s.shot_uuid)
            ended = pump_until(ops, lambda: s.shot_uuid not in ops.tasks, seconds=30)
            task.thread.join(30)
        finally:
            ops.redraw, ops.finish = real_redraw, real_finish
        report[label] = {"started": started, "ended": ended, "status": s.status, "running": s.running,
                         "reports": list(reports), "timer": bpy.app.timers.is_registered(task.timer),
                         "cancelled": task.cancel.is_set(), "worker_alive": task.thread.is_alive()}
        s.keys[0].box_min = (s.keys[0].box_min[0] + 1, s.keys[0].box_min[1])  # new work for the next run

    failing_case("redraw_fails", redraw=broken)  # raised in drained() at the first written frame
    failing_case("finish_fails", finish=broken)  # raised applying the result
    # nothing is stuck: the next Track runs and finishes
    report["after"] = [run(bpy.ops.mam2.track)]
    pump_until(ops, lambda: s.shot_uuid not in ops.tasks)
    report["after"].append(s.status)

    # Add Key copies the nearest key's prompt into plain values before the collection grows
    other = bpy.data.scenes.new("Keys")
    first = other.mam2.keys.add()
    first.frame, first.use_box, first.box_min, first.box_max = 1, False, (1.5, 2.5), (30.25, 40.75)
    for co, label in (((3.0, 4.0), "FG"), ((5.5, 6.5), "BG"), ((7.0, 8.0), "FG")):
        point = first.points.add()
        point.co, point.label = co, label
    for frame in range(2, 130):
        addon.keys.add_key(other, frame)  # nearest: the key before it
    report["copied_keys"] = sorted({(k.use_box, tuple(k.box_min), tuple(k.box_max),
                                     tuple((tuple(p.co), p.label) for p in k.points)) for k in other.mam2.keys})
    report["key_frames"] = [k.frame for k in other.mam2.keys] == list(range(1, 130))
    bpy.data.scenes.remove(other)


@scenario
def shots_and_scenes():
    """The shot's span is kept in the scene (a range narrowed inside it keeps the shot); a copied scene
    gets its own shot whichever of the two acts first; an alpha folder that cannot be made is a message."""
    addon = load_addon()
    scene, tree, node = set_up_shot(addon, os.path.join(cfg["work"], "spans.blend"), first=998)
    add_key(4, box=cfg["box"])  # file 1001
    s = scene.mam2
    steps = report["steps"] = []

    def track(label, first=None, last=None, on=None):
        on = on or bpy.context.scene
        on.mam2.use_image_range = first is None
        if first is not None:
            on.mam2.frame_first, on.mam2.frame_last = first, last
        with bpy.context.temp_override(scene=on):
            result = run(bpy.ops.mam2.track)
        steps.append({"label": label, "result": result, "status": on.mam2.status, "shot": on.mam2.shot,
                      "span": list(on.mam2.shot_span), "uuid": on.mam2.shot_uuid})

    track("narrow", 4, 6)  # files 1001-1003
    track("widened", None)  # files 998-1003: out of the span, a new shot
    track("narrowed again", 4, 6)  # inside the widened span: the same shot, its alphas cached
    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.open_mainfile(filepath=bpy.data.filepath)
    scene = bpy.context.scene
    track("reopened", 4, 5)  # files 1001-1002

    # a copied scene ("Scene.001"): the original Tracks first and keeps its shot; the copy gets its own
    copy = scene.copy()
    report["copy_names"] = [scene.name, copy.name, copy.mam2.shot_uuid == scene.mam2.shot_uuid]
    track("original first", on=scene)
    track("copy second", on=copy)
    # the other order: the copy acts first (Add Key), the original then Tracks
    second = scene.copy()
    with bpy.context.temp_override(scene=second):
        second.frame_set(5)
        report["copy_key"] = run(bpy.ops.mam2.key_add)
    track("original after the copy", on=scene)
    track("second copy", on=second)
    report["owners"] = [sc.mam2.shot_owner for sc in (scene, copy, second)]

    # an alpha folder under a file: a message, not a traceback
    blocker = os.path.join(cfg["work"], "a_file")
    open(blocker, "w").close()
    scene.mam2.output_dir = os.path.join(blocker, "alphas")
    with bpy.context.temp_override(scene=scene):
        report["bad_folder"] = run(bpy.ops.mam2.track) + [scene.mam2.status, scene.mam2.running]


@scenario
def quit_mid_run():
    """Blender quits while a frame is computing on a server it did not start: Blender disables its add-ons
    (bpy.utils._on_exit), the run is cancelled on the server and nothing keeps Blender from exiting."""
    addon = load_addon()
    addon.ops.INLINE_IN_BACKGROUND = False
    scene, tree, node = _shot(addon, "quit")
    s = scene.mam2
    report["track"] = run(bpy.ops.mam2.track)
    pump_until(addon.ops, lambda: s.status.startswith("tracking"))
    report["status_at_quit"] = s.status
    report["quit_at"] = time.time()


def _server_op(addon, action: str) -> list:
    s = bpy.context.scene.mam2
    result = run(bpy.ops.mam2.server, action=action)
    pump_until(addon.ops, lambda: f"server:{s.address}" not in addon.ops.tasks)
    return [result, addon.server._seen.get(s.address, ""), addon.server.state(s.address)]


@scenario
def server_lifetime():
    """A server the add-on starts: its state, Check / Restart / Stop, stopped when the add-on is disabled
    and when Blender quits (or exits with it when Blender crashes)."""
    addon = load_addon()
    launcher = addon.mam2_client.launcher
    scene, tree, node = _shot(addon, "server")
    s = scene.mam2
    s.address, s.start_server = cfg["own_address"], True
    report["state_before"] = addon.server.state(s.address)
    report["track"] = run(bpy.ops.mam2.track) + [s.status]
    pids = report["pids"] = {"first": launcher.started_server(s.address).process.pid}
    report["state"] = addon.server.state(s.address)
    report["check"] = _server_op(addon, "CHECK")
    s.engine = "classic"
    report["restart"] = _server_op(addon, "RESTART")
    restarted = launcher.started_server(s.address)
    pids["restarted"] = restarted.process.pid
    report["restart_args"] = restarted.serve_args
    report["stop"] = _server_op(addon, "STOP")
    report["stopped_exit_code"] = restarted.process.poll()
    s.engine = "default"
    s.keys[0].box_min = (cfg["box"][0] + 2, cfg["box"][1])
    report["track_again"] = run(bpy.ops.mam2.track) + [s.status]
    again = launcher.started_server(s.address)
    pids["again"] = again.process.pid
    disable_addon()
    report["after_disable"] = [again.process.poll(), launcher.started_server(cfg["own_address"]) is None]
    addon = load_addon()
    s = bpy.context.scene.mam2
    s.keys[0].box_min = (cfg["box"][0] + 4, cfg["box"][1])
    report["track_last"] = run(bpy.ops.mam2.track) + [s.status]
    pids["last"] = launcher.started_server(s.address).process.pid
    if cfg.get("crash"):
        with open(REPORT, "w") as fh:
            json.dump(report, fh, indent=1)
        os._exit(0)  # no atexit, no unregister: the server must still go (`mam2 serve --exit-with`)


@scenario
def installed_extension():
    """The zip from `mam2 package blender` installed and enabled in real Blender, then used."""
    report["install"] = run(bpy.ops.extensions.package_install_files, filepath=cfg["zip"], repo="user_default",
                            enable_on_install=True)
    module = "bl_ext.user_default.mam2_matte"
    report["enabled"] = module in {a.module for a in bpy.context.preferences.addons}
    import zmq
    import msgpack
    report["wheels"] = [zmq.__file__, msgpack.__file__]
    addon = sys.modules[module]
    report["addon_file"] = addon.__file__
    report["client_module"] = addon.ops.core.__name__
    prefs = bpy.context.preferences.addons[module].preferences
    prefs.server_command = cfg["server_command"]  # the add-on starts its own server from the preference
    scene, tree, node = set_up_shot(addon, os.path.join(cfg["work"], "installed.blend"))
    add_key(1, box=cfg["box"])
    s = scene.mam2
    s.address, s.start_server = cfg["own_address"], True
    report["track"] = run(bpy.ops.mam2.track) + [s.status, alpha_files(s)]
    report["state"] = addon.server.state(s.address)
    server = addon.mam2_client.launcher.started_server(s.address)
    import addon_utils
    addon_utils.disable(module)
    report["disabled"] = [not hasattr(bpy.types.Scene, "mam2"), server.process.poll() is not None]


if __name__ == "__main__":
    try:
        SCENARIOS[SCENARIO]()
    finally:
        with open(REPORT, "w") as fh:
            json.dump(report, fh, indent=1)
