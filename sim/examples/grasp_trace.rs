//! Prints the tool, finger and object state while grasping and lifting a cube.
use vla_core::Action;
use vla_sim::{Cell, ControlMode, ObjectKind, ObjectSpec, RobotDescription, SimConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut cell = Cell::new(SimConfig::default(), RobotDescription::default_arm()?)?;
    cell.add_object(
        ObjectSpec::new(ObjectKind::Cube, "red", [0.8, 0.1, 0.1]),
        0.45,
        0.0,
        0.0,
    );
    let mut ctrl = cell.home(ControlMode::EeDeltaPose)?;
    let plan: [([f64; 3], f32, usize); 4] = [
        ([0.45, 0.0, 0.12], 0.0, 15),
        ([0.45, 0.0, 0.02], 0.0, 12),
        ([0.45, 0.0, 0.02], 1.0, 6),
        ([0.45, 0.0, 0.25], 1.0, 15),
    ];
    for (target, g, steps) in plan {
        for _ in 0..steps {
            let p = cell.tcp_pose().translation.vector;
            let mut d = [target[0] - p.x, target[1] - p.y, target[2] - p.z];
            let n = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
            if n > 0.025 {
                d.iter_mut().for_each(|v| *v *= 0.025 / n);
            }
            let r = ctrl.step(
                &mut cell,
                &Action::new([d[0] as f32, d[1] as f32, d[2] as f32], [0.0; 3], g),
            );
            let o = cell.object_pose(0).translation.vector;
            let rpy = vla_sim::kinematics::rpy(&cell.tcp_pose().rotation);
            println!(
                "tcp {:.3} {:.3} {:.3} rpy {:.2} {:.2} {:.2} | finger {:.4} | obj {:.3} {:.3} {:.3} | touch {} {} | {:?}",
                p.x, p.y, p.z, rpy[0], rpy[1], rpy[2], cell.robot.finger_position(&cell.world), o.x, o.y, o.z,
                cell.touches_finger(0, 0), cell.touches_finger(0, 1), r.reanchored
            );
            println!(
                "   q {:?}\n   cmd {:?}",
                cell.robot
                    .joint_positions(&cell.world)
                    .iter()
                    .map(|v| (v * 1000.0).round() / 1000.0)
                    .collect::<Vec<_>>(),
                ctrl.joint_command
                    .iter()
                    .map(|v| (v * 1000.0).round() / 1000.0)
                    .collect::<Vec<_>>()
            );
            for pair in cell.world.narrow_phase.contact_pairs() {
                if pair.has_any_active_contact() {
                    let name = |c| {
                        cell.world
                            .colliders
                            .get(c)
                            .and_then(|c| c.parent())
                            .and_then(|b| {
                                cell.robot
                                    .links
                                    .iter()
                                    .find(|(_, h)| *h == b)
                                    .map(|(n, _)| n.clone())
                            })
                            .unwrap_or_else(|| format!("{:?}", c))
                    };
                    println!(
                        "   contact {} - {}",
                        name(pair.collider1),
                        name(pair.collider2)
                    );
                }
            }
        }
    }
    Ok(())
}
