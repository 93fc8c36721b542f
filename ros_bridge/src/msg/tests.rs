//! CDR layouts checked byte by byte against what rclcpp writes (little endian, offsets
//! counted from the start of the payload after the 4-byte encapsulation header).

use super::*;

fn roundtrip<M: RosMessage + PartialEq + std::fmt::Debug>(m: &M) -> Vec<u8> {
    let bytes = to_cdr(m).expect("serialises");
    let back: M = from_cdr(&bytes).expect("parses");
    assert_eq!(&back, m, "{} round trip", M::ros_type());
    bytes
}

fn header(frame: &str) -> Header {
    Header {
        stamp: Time { sec: 1, nanosec: 2 },
        frame_id: frame.into(),
    }
}

#[test]
fn header_layout() {
    let b = roundtrip(&header("ab"));
    // sec, nanosec, string length (with NUL), "ab\0"
    assert_eq!(b, vec![1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, b'a', b'b', 0]);
}

#[test]
fn image_layout_pads_like_rclcpp() {
    let img = Image {
        header: header("c"),
        height: 2,
        width: 3,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: 9,
        data: (0..18).collect(),
    };
    let b = roundtrip(&img);
    // header is 14 bytes, so `height` is padded to offset 16
    assert_eq!(&b[12..16], &[b'c', 0, 0, 0]);
    assert_eq!(&b[16..20], &2u32.to_le_bytes());
    assert_eq!(&b[20..24], &3u32.to_le_bytes());
    assert_eq!(&b[24..28], &5u32.to_le_bytes());
    assert_eq!(&b[28..33], b"rgb8\0");
    assert_eq!(b[33], 0); // is_bigendian
    assert_eq!(&b[36..40], &9u32.to_le_bytes()); // step, aligned to 4
    assert_eq!(&b[40..44], &18u32.to_le_bytes());
    assert_eq!(&b[44..], &(0..18).collect::<Vec<u8>>()[..]);
}

#[test]
fn twist_stamped_aligns_doubles_to_eight() {
    let t = TwistStamped {
        header: header("a"),
        twist: Twist {
            linear: Vector3 {
                x: 1.5,
                y: 0.0,
                z: -2.0,
            },
            angular: Vector3::default(),
        },
    };
    let b = roundtrip(&t);
    assert_eq!(b.len(), 16 + 6 * 8);
    assert_eq!(&b[16..24], &1.5f64.to_le_bytes());
    assert_eq!(&b[32..40], &(-2.0f64).to_le_bytes());
}

#[test]
fn trajectory_point_and_duration() {
    let p = JointTrajectoryPoint {
        positions: vec![0.5],
        velocities: vec![],
        accelerations: vec![],
        effort: vec![],
        time_from_start: Duration::from_secs_f64(0.1),
    };
    let b = roundtrip(&p);
    // len 1, pad to 8, 0.5, then three empty sequences, then sec and nanosec
    assert_eq!(&b[0..4], &1u32.to_le_bytes());
    assert_eq!(&b[8..16], &0.5f64.to_le_bytes());
    assert_eq!(&b[16..28], &[0u8; 12]);
    assert_eq!(&b[28..32], &0i32.to_le_bytes());
    assert_eq!(&b[32..36], &100_000_000u32.to_le_bytes());
    let traj = JointTrajectory {
        header: header("base"),
        joint_names: vec!["j1".into(), "j2".into()],
        points: vec![p],
    };
    roundtrip(&traj);
}

#[test]
fn small_messages() {
    assert_eq!(roundtrip(&Bool { data: true }), vec![1]);
    assert_eq!(
        roundtrip(&StringMsg {
            data: "pick".into()
        }),
        vec![5, 0, 0, 0, b'p', b'i', b'c', b'k', 0]
    );
    let g = roundtrip(&GripperCommand {
        position: 0.04,
        max_effort: 20.0,
    });
    assert_eq!(&g[0..8], &0.04f64.to_le_bytes());
    roundtrip(&GripperCommandGoal::default());
    let f = roundtrip(&Float64MultiArray {
        layout: MultiArrayLayout::vector("gripper", 1),
        data: vec![0.5],
    });
    // dim count 1, label "gripper\0" (8), size, stride, data_offset, data len, pad, 0.5
    assert_eq!(&f[0..4], &1u32.to_le_bytes());
    assert_eq!(&f[4..8], &8u32.to_le_bytes());
    assert_eq!(&f[8..16], b"gripper\0");
    assert_eq!(&f[28..32], &1u32.to_le_bytes());
    assert_eq!(&f[32..40], &0.5f64.to_le_bytes());
    roundtrip(&Int32MultiArray {
        layout: MultiArrayLayout::vector("tokens", 2),
        data: vec![-1, 300],
    });
    roundtrip(&CompressedImage {
        header: header("cam"),
        format: "jpeg".into(),
        data: vec![0xFF, 0xD8],
    });
    roundtrip(&JointState {
        header: header(""),
        name: vec!["a".into()],
        position: vec![0.1],
        velocity: vec![],
        effort: vec![],
    });
}

#[test]
fn diagnostics_level_is_one_octet() {
    let s = DiagnosticStatus {
        level: DiagnosticStatus::WARN,
        name: "n".into(),
        message: String::new(),
        hardware_id: String::new(),
        values: vec![KeyValue {
            key: "k".into(),
            value: "v".into(),
        }],
    };
    let b = roundtrip(&s);
    assert_eq!(&b[0..8], &[1, 0, 0, 0, 2, 0, 0, 0]); // level, pad, name length
    roundtrip(&DiagnosticArray {
        header: header("x"),
        status: vec![s],
    });
}

#[test]
fn type_names_follow_ros2_conventions() {
    assert_eq!(Image::dds_type(), "sensor_msgs::msg::dds_::Image_");
    assert_eq!(TwistStamped::ros_type(), "geometry_msgs/msg/TwistStamped");
    assert_eq!(
        GripperCommandGoal::dds_type(),
        "control_msgs::action::dds_::GripperCommand_Goal_"
    );
}

#[test]
fn truncated_cdr_is_an_error_not_a_panic() {
    let b = to_cdr(&header("frame")).expect("serialises");
    for cut in 0..b.len() {
        assert!(from_cdr::<Header>(&b[..cut]).is_err(), "cut at {cut}");
    }
    // a length field far past the end
    let mut img = to_cdr(&Image::default()).expect("serialises");
    let n = img.len();
    img[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(from_cdr::<Image>(&img).is_err());
}
