//! Friction grasping: lift a cube, shake it, it stays; open the fingers, it falls.

use vla_core::Action;
use vla_sim::{Cell, ControlMode, ObjectKind, ObjectSpec, RobotDescription, SimConfig};

fn cell_with(kind: ObjectKind) -> (Cell, vla_sim::Controller) {
    let mut cell = Cell::new(
        SimConfig::default(),
        RobotDescription::default_arm().unwrap(),
    )
    .unwrap();
    cell.add_object(
        ObjectSpec::new(kind, "red", [0.8, 0.1, 0.1]),
        0.45,
        0.0,
        0.0,
    );
    let ctrl = cell.home(ControlMode::EeDeltaPose).unwrap();
    (cell, ctrl)
}

/// Move the tool towards a point at limited speed, one control step.
fn toward(cell: &Cell, target: [f64; 3], gripper: f32) -> Action {
    let p = cell.tcp_pose().translation.vector;
    let mut d = [target[0] - p.x, target[1] - p.y, target[2] - p.z];
    let n = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
    let max = 0.025;
    if n > max {
        d.iter_mut().for_each(|v| *v *= max / n);
    }
    Action::new([d[0] as f32, d[1] as f32, d[2] as f32], [0.0; 3], gripper)
}

fn run(
    cell: &mut Cell,
    ctrl: &mut vla_sim::Controller,
    target: [f64; 3],
    gripper: f32,
    steps: usize,
) {
    for _ in 0..steps {
        let a = toward(cell, target, gripper);
        ctrl.step(cell, &a);
    }
}

fn grasp_and_lift(kind: ObjectKind) -> (Cell, vla_sim::Controller) {
    let (mut cell, mut ctrl) = cell_with(kind);
    let obj = cell.object_pose(0).translation.vector;
    let h = cell.objects[0].spec.height as f64;
    run(
        &mut cell,
        &mut ctrl,
        [obj.x, obj.y, h * 0.5 + 0.10],
        0.0,
        15,
    );
    run(
        &mut cell,
        &mut ctrl,
        [obj.x, obj.y, (h * 0.5).max(0.02)],
        0.0,
        12,
    );
    let tcp = cell.tcp_pose().translation.vector;
    assert!(
        (tcp - obj).xy().norm() < 0.01,
        "tool above object: {tcp} vs {obj}"
    );
    run(
        &mut cell,
        &mut ctrl,
        [obj.x, obj.y, (h * 0.5).max(0.02)],
        1.0,
        6,
    );
    run(&mut cell, &mut ctrl, [obj.x, obj.y, 0.25], 1.0, 15);
    (cell, ctrl)
}

#[test]
fn cube_is_held_by_friction_through_a_shake_and_falls_when_opened() {
    let (mut cell, mut ctrl) = grasp_and_lift(ObjectKind::Cube);
    assert!(cell.is_grasped(0), "cube between both fingers");
    assert!(
        cell.object_bottom_height(0) > 0.10,
        "lifted: {}",
        cell.object_bottom_height(0)
    );
    let in_hand = |c: &Cell| c.tcp_pose().inverse() * c.object_pose(0);
    let before = in_hand(&cell);
    // Shake: ±3 cm sideways, ±2 cm vertically, 10 Hz control, for 2 s.
    for k in 0..20 {
        let s = if k % 2 == 0 { 1.0 } else { -1.0 };
        ctrl.step(
            &mut cell,
            &Action::new([0.0, 0.03 * s, 0.02 * s], [0.0; 3], 1.0),
        );
    }
    let after = in_hand(&cell);
    let slip = (after.translation.vector - before.translation.vector).norm();
    assert!(slip < 0.005, "slip in the hand {slip} m");
    assert!(cell.is_grasped(0));
    // Open: it falls to the table.
    for _ in 0..15 {
        ctrl.step(&mut cell, &Action::new([0.0; 3], [0.0; 3], 0.0));
    }
    assert!(
        cell.object_bottom_height(0) < 0.01,
        "fell: {}",
        cell.object_bottom_height(0)
    );
    assert!(!cell.touches_gripper(0));
}

#[test]
fn can_and_ball_are_held_too() {
    for kind in [ObjectKind::Cylinder, ObjectKind::Ball] {
        let (cell, _) = grasp_and_lift(kind);
        assert!(cell.is_grasped(0), "{kind:?} grasped");
        assert!(cell.object_bottom_height(0) > 0.10, "{kind:?} lifted");
    }
}

#[test]
fn without_friction_nothing_is_lifted() {
    let config = SimConfig {
        friction: 0.0,
        ..Default::default()
    };
    let mut cell = Cell::new(config, RobotDescription::default_arm().unwrap()).unwrap();
    let mut spec = ObjectSpec::new(ObjectKind::Cube, "red", [0.8, 0.1, 0.1]);
    spec.friction = 0.0;
    cell.add_object(spec, 0.45, 0.0, 0.0);
    let mut ctrl = cell.home(ControlMode::EeDeltaPose).unwrap();
    run(&mut cell, &mut ctrl, [0.45, 0.0, 0.12], 0.0, 15);
    run(&mut cell, &mut ctrl, [0.45, 0.0, 0.02], 0.0, 12);
    run(&mut cell, &mut ctrl, [0.45, 0.0, 0.02], 1.0, 6);
    run(&mut cell, &mut ctrl, [0.45, 0.0, 0.25], 1.0, 15);
    assert!(
        cell.object_bottom_height(0) < 0.02,
        "lifted without friction?"
    );
}
