//! Interoperability with an independent DDS implementation: a Cyclone DDS (Python) peer
//! plays the robot around `vla ros bridge` running an untrained policy, in a fresh network
//! namespace. See `ros_bridge/tests/peer/cyclone_peer.py` for every check.

mod ros_common;

use ros_common::*;
use vla_ros_bridge::netns;

const TEST: &str = "cyclone_peer_drives_the_bridge_and_commands_stay_in_the_envelope";

#[test]
fn cyclone_peer_drives_the_bridge_and_commands_stay_in_the_envelope() {
    if let Err(why) = netns::available() {
        return netns::skip_or_fail(TEST, &why);
    }
    let py = match cyclone_python() {
        Ok(py) => py,
        Err(why) => return netns::skip_or_fail(TEST, &why),
    };
    let dir = temp_dir("interop");
    let ckpt = dir.join("run");
    untrained_checkpoint(&ckpt);
    // A valid JPEG for the peer's compressed wrist camera.
    let img = image::RgbImage::from_fn(96, 72, |x, y| image::Rgb([x as u8 * 2, y as u8 * 3, 90]));
    let jpeg = dir.join("wrist.jpg");
    img.save(&jpeg).expect("jpeg");
    // The robot at home, so the bridge's workspace check has forward kinematics.
    let robot = vla_sim::RobotDescription::default_arm().expect("arm");
    let js = vla_ros_bridge::sim_node::home_joint_state(&robot).expect("home");
    let config = vla_ros_bridge::BridgeConfig::load(None, &[]).expect("config");
    let tool = robot.chain.forward(&js.position[..6]).translation.vector;
    let [lo, hi] = config.limits.workspace;
    let report = dir.join("peer.json");
    let vla = env!("CARGO_BIN_EXE_vla");
    let peer = repo().join("ros_bridge/tests/peer/cyclone_peer.py");
    let joints: Vec<String> = js.position.iter().map(|v| v.to_string()).collect();
    let script = format!(
        "{vla} ros bridge --ckpt {ckpt} --json --set control.model_deadline_s=0.5 \
           > {dir}/bridge.json 2> {dir}/bridge.log & B=$!; \
         {py} {peer} --out {report} --jpeg {jpeg} --joint-names {names} --joints {joints} \
           --tool {tx} {ty} {tz} --workspace {lo0} {lo1} {lo2} {hi0} {hi1} {hi2} \
           --max-linear-speed {ls} --max-angular-speed {as_} \
           --max-linear-acceleration {la} --period {period} --watchdog-timeout {wd} \
           > {dir}/peer.log 2>&1; R=$?; STOP_B; wait $B; BR=$?; kill $K 2>/dev/null; \
         [ $R -eq 0 ] && [ $BR -eq 0 ]",
        vla = sh_quote(vla),
        ckpt = sh_quote(&ckpt.display().to_string()),
        dir = sh_quote(&dir.display().to_string()),
        py = sh_quote(&py.display().to_string()),
        peer = sh_quote(&peer.display().to_string()),
        report = sh_quote(&report.display().to_string()),
        jpeg = sh_quote(&jpeg.display().to_string()),
        names = sh_quote(&js.name.join(",")),
        joints = sh_quote(&joints.join(",")),
        tx = tool.x,
        ty = tool.y,
        tz = tool.z,
        lo0 = lo[0],
        lo1 = lo[1],
        lo2 = lo[2],
        hi0 = hi[0],
        hi1 = hi[1],
        hi2 = hi[2],
        ls = config.limits.max_linear_speed,
        as_ = config.limits.max_angular_speed,
        la = config.limits.max_linear_acceleration,
        period = config.control.period_s,
        wd = config.control.watchdog_timeout_s,
    );
    let script = with_stop_b(&script);
    let status = netns::shell(&script)
        .env("PYTHONPATH", repo().join("ros_bridge/tests/peer"))
        .status()
        .expect("runs the namespace");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let peer_report = read("peer.json");
    eprintln!("peer report: {peer_report}");
    eprintln!("bridge counters: {}", read("bridge.json"));
    if !status.success() {
        eprintln!("--- peer log ---\n{}", read("peer.log"));
        eprintln!("--- bridge log (tail) ---");
        let log = read("bridge.log");
        let lines: Vec<&str> = log.lines().collect();
        for l in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("{l}");
        }
    }
    assert!(status.success(), "interop run failed ({status})");
    let v: serde_json::Value = serde_json::from_str(&peer_report).expect("peer JSON");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["violation_count"], 0, "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}
