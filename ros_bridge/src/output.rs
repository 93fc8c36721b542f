//! The innermost sinks: commands become ROS messages for MoveIt Servo (TwistStamped) or
//! ros2_control (JointTrajectory, or a forward command controller's Float64MultiArray),
//! plus the gripper command.

use crate::config::{BridgeConfig, GripperOutput};
use crate::msg::{
    Duration, Float64MultiArray, GripperCommand, Header, JointTrajectory, JointTrajectoryPoint,
    MultiArrayLayout, TwistStamped, Vector3,
};
use crate::safety::{ArmModel, Command, CommandSink, Motion, SinkError};
use crate::transport::{Publisher, Transport, TransportError};

/// Publishes gripper closures as the configured message type.
pub struct GripperPublisher {
    kind: GripperOutput,
    f64s: Option<Box<dyn Publisher<Float64MultiArray>>>,
    command: Option<Box<dyn Publisher<GripperCommand>>>,
    open: f64,
    closed: f64,
    effort: f64,
}

impl GripperPublisher {
    pub fn new<T: Transport>(t: &mut T, c: &BridgeConfig) -> Result<Self, TransportError> {
        let qos = c.qos.commands();
        let kind = c.output.gripper;
        Ok(GripperPublisher {
            kind,
            f64s: match kind {
                GripperOutput::Float64MultiArray => Some(t.publisher(&c.topics.gripper, qos)?),
                _ => None,
            },
            command: match kind {
                GripperOutput::GripperCommand => Some(t.publisher(&c.topics.gripper, qos)?),
                _ => None,
            },
            open: c.output.gripper_open_position,
            closed: c.output.gripper_closed_position,
            effort: c.output.gripper_max_effort,
        })
    }

    fn send(&self, closure: f64) -> Result<(), SinkError> {
        let position = self.open + closure.clamp(0.0, 1.0) * (self.closed - self.open);
        let out = |e: TransportError| SinkError::Output(e.to_string());
        match self.kind {
            GripperOutput::Float64MultiArray => {
                if let Some(p) = &self.f64s {
                    p.publish(Float64MultiArray {
                        layout: MultiArrayLayout::vector("gripper", 1),
                        data: vec![position],
                    })
                    .map_err(out)?;
                }
            }
            GripperOutput::GripperCommand => {
                if let Some(p) = &self.command {
                    p.publish(GripperCommand {
                        position,
                        max_effort: self.effort,
                    })
                    .map_err(out)?;
                }
            }
            GripperOutput::None => {}
        }
        Ok(())
    }
}

/// `geometry_msgs/TwistStamped` for MoveIt Servo, stamped at publication (Servo drops
/// commands whose stamp is older than its timeout).
pub struct TwistOutput {
    twist: Box<dyn Publisher<TwistStamped>>,
    frame_id: String,
    gripper: GripperPublisher,
}

impl TwistOutput {
    pub fn new<T: Transport>(t: &mut T, c: &BridgeConfig) -> Result<Self, TransportError> {
        Ok(TwistOutput {
            twist: t.publisher(&c.topics.twist, c.qos.commands())?,
            frame_id: c.output.twist_frame_id.clone(),
            gripper: GripperPublisher::new(t, c)?,
        })
    }
}

impl CommandSink for TwistOutput {
    fn send(&mut self, cmd: Command) -> Result<Command, SinkError> {
        let Motion::Twist(t) = &cmd.motion else {
            return Err(SinkError::Output(
                "the twist output got a joint command".into(),
            ));
        };
        self.twist
            .publish(TwistStamped {
                header: Header::now(&self.frame_id),
                twist: crate::msg::Twist {
                    linear: Vector3::from_array(t.linear),
                    angular: Vector3::from_array(t.angular),
                },
            })
            .map_err(|e| SinkError::Output(e.to_string()))?;
        if let Some(g) = cmd.gripper {
            self.gripper.send(g)?;
        }
        Ok(cmd)
    }
}

/// The joints a joint output sends, in its order: the policy's action order for a
/// joint-space policy (the order its controller was recorded in), else the URDF chain's.
#[derive(Clone, Debug, PartialEq)]
pub struct JointOrder {
    pub names: Vec<String>,
    /// Index in the URDF chain of each sent joint.
    pub chain_index: Vec<usize>,
}

impl JointOrder {
    /// The chain's joints in chain order.
    pub fn chain(arm: &ArmModel) -> Self {
        JointOrder {
            names: arm.joint_names(),
            chain_index: (0..arm.chain.dof()).collect(),
        }
    }

    /// Chain-order positions in this order (an error when `positions` is too short).
    fn pick(&self, positions: &[f64]) -> Result<Vec<f64>, SinkError> {
        self.chain_index
            .iter()
            .map(|&i| positions.get(i).copied())
            .collect::<Option<_>>()
            .ok_or_else(|| {
                SinkError::Output(format!("a joint target of {} joints", positions.len()))
            })
    }
}

/// `trajectory_msgs/JointTrajectory` with one point reached after one control period.
pub struct JointTrajectoryOutput {
    trajectory: Box<dyn Publisher<JointTrajectory>>,
    order: JointOrder,
    gripper: GripperPublisher,
}

impl JointTrajectoryOutput {
    pub fn new<T: Transport>(
        t: &mut T,
        c: &BridgeConfig,
        order: JointOrder,
    ) -> Result<Self, TransportError> {
        Ok(JointTrajectoryOutput {
            trajectory: t.publisher(&c.topics.joint_trajectory, c.qos.commands())?,
            order,
            gripper: GripperPublisher::new(t, c)?,
        })
    }
}

impl CommandSink for JointTrajectoryOutput {
    fn send(&mut self, cmd: Command) -> Result<Command, SinkError> {
        if let Motion::Joints {
            positions,
            duration,
        } = &cmd.motion
        {
            let positions = self.order.pick(positions)?;
            self.trajectory
                .publish(JointTrajectory {
                    // Stamp zero: "start now" for the joint trajectory controller.
                    header: Header::default(),
                    joint_names: self.order.names.clone(),
                    points: vec![JointTrajectoryPoint {
                        positions,
                        velocities: vec![],
                        accelerations: vec![],
                        effort: vec![],
                        time_from_start: Duration::from_secs_f64(*duration),
                    }],
                })
                .map_err(|e| SinkError::Output(e.to_string()))?;
        }
        // A twist here is a stop before any joint state arrived: nothing to hold yet.
        if let Some(g) = cmd.gripper {
            self.gripper.send(g)?;
        }
        Ok(cmd)
    }
}

/// `std_msgs/Float64MultiArray` of joint positions for ros2_control's forward command
/// controller (position interfaces): no names and no timing, so the order is the
/// controller's (see [`JointOrder`]) and the limits upstream bound each step.
pub struct ForwardCommandOutput {
    command: Box<dyn Publisher<Float64MultiArray>>,
    order: JointOrder,
    gripper: GripperPublisher,
}

impl ForwardCommandOutput {
    pub fn new<T: Transport>(
        t: &mut T,
        c: &BridgeConfig,
        order: JointOrder,
    ) -> Result<Self, TransportError> {
        Ok(ForwardCommandOutput {
            command: t.publisher(&c.topics.forward_command, c.qos.commands())?,
            order,
            gripper: GripperPublisher::new(t, c)?,
        })
    }
}

impl CommandSink for ForwardCommandOutput {
    fn send(&mut self, cmd: Command) -> Result<Command, SinkError> {
        if let Motion::Joints { positions, .. } = &cmd.motion {
            let data = self.order.pick(positions)?;
            self.command
                .publish(Float64MultiArray {
                    layout: MultiArrayLayout::vector("joints", data.len()),
                    data,
                })
                .map_err(|e| SinkError::Output(e.to_string()))?;
        }
        if let Some(g) = cmd.gripper {
            self.gripper.send(g)?;
        }
        Ok(cmd)
    }
}
