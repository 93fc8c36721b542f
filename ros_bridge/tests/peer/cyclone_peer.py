"""Interop test peer on Cyclone DDS (an independent DDS + CDR implementation).

Plays the robot around `vla ros bridge`: publishes camera images (raw rgb8 and JPEG), an
instruction (reliable, transient local) and joint states; receives TwistStamped and the
gripper command; sends every malformed input; checks that no command leaves the envelope,
that the bridge keeps running, that the e-stop latches and that the watchdog zeroes the
twist when images stop. Writes a JSON report; exit status 0 only when every check passed.

Run inside a network namespace with lo up; CYCLONEDDS_URI is set here to unicast peers
on 127.0.0.1 so discovery never needs multicast.
"""

import argparse
import json
import math
import os
import random
import sys
import time

os.environ.setdefault(
    "CYCLONEDDS_URI",
    "<CycloneDDS><Domain id='any'><General><Interfaces>"
    "<NetworkInterface name='lo'/></Interfaces><AllowMulticast>false</AllowMulticast>"
    "</General><Discovery><ParticipantIndex>auto</ParticipantIndex>"
    "<MaxAutoParticipantIndex>30</MaxAutoParticipantIndex>"
    "<Peers><Peer address='127.0.0.1'/></Peers></Discovery></Domain></CycloneDDS>",
)

from cyclonedds.core import Policy, Qos  # noqa: E402
from cyclonedds.domain import DomainParticipant  # noqa: E402
from cyclonedds.pub import DataWriter  # noqa: E402
from cyclonedds.sub import DataReader  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402
from cyclonedds.util import duration  # noqa: E402

import ros2_types as m  # noqa: E402

XCDR1 = Policy.DataRepresentation(use_cdrv0_representation=True)
SENSOR = Qos(Policy.Reliability.BestEffort, Policy.Durability.Volatile,
             Policy.History.KeepLast(2), XCDR1)
RELIABLE = Qos(Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100)), Policy.Durability.Volatile,
               Policy.History.KeepLast(100), XCDR1)
LATCHED = Qos(Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100)),
              Policy.Durability.TransientLocal, Policy.History.KeepLast(1), XCDR1)


def now_stamp():
    t = time.time()
    return m.Time(sec=int(t), nanosec=int((t % 1) * 1e9))


class Peer:
    def __init__(self, args):
        self.args = args
        self.dp = DomainParticipant(int(os.environ.get("ROS_DOMAIN_ID", "0")))
        dp = self.dp

        def writer(name, typ, qos):
            return DataWriter(dp, Topic(dp, "rt" + name, typ), qos=qos)

        def reader(name, typ, qos):
            return DataReader(dp, Topic(dp, "rt" + name, typ), qos=qos)

        self.front = writer("/camera/front/image_raw", m.Image, SENSOR)
        self.front_c = writer("/camera/front/image_raw/compressed", m.CompressedImage, SENSOR)
        self.wrist = writer("/camera/wrist/image_raw", m.Image, SENSOR)
        self.wrist_c = writer("/camera/wrist/image_raw/compressed", m.CompressedImage, SENSOR)
        self.instruction = writer("/vla/instruction", m.String, LATCHED)
        self.joints = writer("/joint_states", m.JointState, SENSOR)
        self.estop = writer("/vla/estop", m.Bool, RELIABLE)
        self.estop_reset = writer("/vla/estop_reset", m.Bool, RELIABLE)
        self.twists = reader("/servo_node/delta_twist_cmds", m.TwistStamped, RELIABLE)
        self.grippers = reader("/gripper_controller/commands", m.Float64MultiArray, RELIABLE)
        self.tokens = reader("/vla/action_tokens", m.Int32MultiArray, RELIABLE)
        self.diag = reader("/diagnostics", m.DiagnosticArray, RELIABLE)
        with open(args.jpeg, "rb") as f:
            self.jpeg = list(f.read())
        self.received = []  # (recv_time, linear, angular)
        self.gripper_values = []
        self.token_msgs = 0
        self.diagnostics = {}
        self.violations = []
        self.images_sent = 0
        self.malformed_sent = 0
        self.last_joint_pub = 0.0

    # -- publishing -----------------------------------------------------------------------
    def raw_image(self, w=64, h=48, encoding="rgb8", channels=3):
        data = [random.randrange(256) for _ in range(w * h * channels)]
        return m.Image(header=m.Header(stamp=now_stamp(), frame_id="cam"), height=h, width=w,
                       encoding=encoding, is_bigendian=0, step=w * channels, data=data)

    def send_images(self):
        self.front.write(self.raw_image())
        self.wrist_c.write(m.CompressedImage(header=m.Header(stamp=now_stamp(), frame_id="cam"),
                                             format="jpeg", data=self.jpeg))
        self.images_sent += 2

    def malformed(self, k):
        """Every kind of malformed camera message the bridge must drop and count."""
        good = self.raw_image(8, 6)
        h = m.Header(stamp=now_stamp(), frame_id="cam")
        cases = [
            ("unknown_encoding", lambda: self.front.write(
                m.Image(header=h, height=6, width=8, encoding="yuv422", step=16,
                        data=[0] * 96))),
            ("size_mismatch", lambda: self.front.write(
                m.Image(header=h, height=6, width=8, encoding="rgb8", step=24,
                        data=good.data[:-5]))),
            ("step_too_small", lambda: self.front.write(
                m.Image(header=h, height=6, width=8, encoding="rgb8", step=10,
                        data=[0] * 60))),
            ("empty", lambda: self.front.write(
                m.Image(header=h, height=6, width=8, encoding="rgb8", step=24, data=[]))),
            ("undecodable_jpeg", lambda: self.front_c.write(
                m.CompressedImage(header=h, format="jpeg", data=[0xFF, 0xD8] + [7] * 50))),
            ("truncated_jpeg", lambda: self.front_c.write(
                m.CompressedImage(header=h, format="jpeg", data=self.jpeg[: len(self.jpeg) // 3]))),
            ("empty_jpeg", lambda: self.front_c.write(
                m.CompressedImage(header=h, format="jpeg", data=[]))),
            ("unknown_format", lambda: self.front_c.write(
                m.CompressedImage(header=h, format="tiff", data=self.jpeg))),
            ("huge_header", lambda: self.front.write(
                m.Image(header=h, height=100000, width=100000, encoding="rgb8", step=300000,
                        data=[1, 2, 3]))),
        ]
        name, send = cases[k % len(cases)]
        send()
        self.malformed_sent += 1
        return name

    def send_joints(self):
        t = time.time()
        if t - self.last_joint_pub < 0.02:
            return
        self.last_joint_pub = t
        self.joints.write(m.JointState(header=m.Header(stamp=now_stamp()),
                                       name=self.args.joint_names.split(","),
                                       position=[float(v) for v in self.args.joints.split(",")]))

    # -- receiving and checking -----------------------------------------------------------
    def poll(self):
        a = self.args
        for t in self.twists.take(N=200):
            lin = [t.twist.linear.x, t.twist.linear.y, t.twist.linear.z]
            ang = [t.twist.angular.x, t.twist.angular.y, t.twist.angular.z]
            recv = time.time()
            vals = lin + ang
            if not all(math.isfinite(v) for v in vals):
                self.violations.append(f"non-finite twist {vals}")
            elif math.hypot(*lin) > a.max_linear_speed + 1e-6:
                self.violations.append(f"linear speed {math.hypot(*lin)} > {a.max_linear_speed}")
            elif math.hypot(*ang) > a.max_angular_speed + 1e-6:
                self.violations.append(f"angular speed {math.hypot(*ang)} > {a.max_angular_speed}")
            else:
                p = [a.tool[i] + lin[i] * a.period for i in range(3)]
                if any(p[i] < a.workspace[i] - 1e-6 or p[i] > a.workspace[3 + i] + 1e-6
                       for i in range(3)):
                    self.violations.append(f"tool would leave the workspace: {p}")
            if self.received:
                plin = self.received[-1][1]
                dv = math.dist(lin, plin)
                if any(lin) and dv > a.max_linear_acceleration * a.period + 1e-6:
                    self.violations.append(f"linear acceleration step {dv}")
            self.received.append((recv, lin, ang))
        for g in self.grippers.take(N=200):
            for v in g.data:
                lo, hi = sorted((a.gripper_closed, a.gripper_open))
                if not (math.isfinite(v) and lo - 1e-9 <= v <= hi + 1e-9):
                    self.violations.append(f"gripper command {v} outside [{lo}, {hi}]")
                self.gripper_values.append(v)
        self.token_msgs += len(self.tokens.take(N=200))
        for d in self.diag.take(N=50):
            for s in d.status:
                self.diagnostics = {kv.key: kv.value for kv in s.values}

    def run_for(self, seconds, images=True, malformed=False, rate=15.0):
        end = time.time() + seconds
        next_img = time.time()
        k = 0
        while time.time() < end:
            self.send_joints()
            if images and time.time() >= next_img:
                self.send_images()
                if malformed:
                    self.malformed(k)
                    k += 1
                next_img += 1.0 / rate
            self.poll()
            time.sleep(0.003)

    def moving_since(self, t0):
        return [r for r in self.received if r[0] >= t0 and (any(r[1]) or any(r[2]))]

    def main(self):
        a = self.args
        report = {"phases": {}}
        ok = True
        self.instruction.write(m.String(data=a.instruction))
        # Warm up: discovery, model load, first moving command.
        t0 = time.time()
        while time.time() - t0 < a.warmup and not self.moving_since(t0):
            self.run_for(0.2)
        report["phases"]["warmup_s"] = round(time.time() - t0, 2)
        if not self.moving_since(t0):
            report["error"] = "no non-zero TwistStamped from the bridge"
            ok = False
        # Normal operation.
        t1 = time.time()
        self.run_for(a.phase)
        n_normal = len([r for r in self.received if r[0] >= t1])
        report["phases"]["normal"] = {"twists": n_normal, "moving": len(self.moving_since(t1))}
        # Every malformed input while valid frames keep flowing.
        t2 = time.time()
        self.run_for(a.phase, malformed=True)
        moving_after_bad = len(self.moving_since(t2 + 0.5))
        report["phases"]["malformed"] = {"sent": self.malformed_sent, "moving": moving_after_bad}
        if moving_after_bad == 0:
            report.setdefault("failures", []).append("bridge stopped acting after malformed input")
        # Emergency stop latches until reset.
        self.estop.write(m.Bool(data=True))
        self.estop.write(m.Bool(data=False))
        t3 = time.time()
        self.run_for(a.phase)
        moving_latched = len(self.moving_since(t3 + 0.4))
        self.estop_reset.write(m.Bool(data=True))
        t4 = time.time()
        self.run_for(a.phase)
        moving_cleared = len(self.moving_since(t4 + 0.4))
        report["phases"]["estop"] = {"moving_while_latched": moving_latched,
                                     "moving_after_reset": moving_cleared}
        if moving_latched:
            report.setdefault("failures", []).append("moved while the e-stop was latched")
        if not moving_cleared:
            report.setdefault("failures", []).append("never moved again after e-stop reset")
        # Watchdog: images stop, twist must go to zero within timeout (+ one tick + slack).
        t5 = time.time()
        self.run_for(a.phase, images=False)
        settle = t5 + a.watchdog_timeout + a.period + 0.25
        after = [r for r in self.received if r[0] >= settle]
        moving_after = [r for r in after if any(r[1]) or any(r[2])]
        report["phases"]["watchdog"] = {"twists_after_timeout": len(after),
                                        "moving_after_timeout": len(moving_after)}
        if moving_after:
            report.setdefault("failures", []).append("twist not zeroed after images stopped")
        if not after:
            report.setdefault("failures", []).append("bridge stopped publishing (no hold)")
        # Let one more diagnostics message arrive.
        end = time.time() + 1.5
        while time.time() < end:
            self.poll()
            time.sleep(0.01)
        rejected = int(self.diagnostics.get("frames_rejected", "0") or 0)
        report.update({
            "twists": len(self.received),
            "grippers": len(self.gripper_values),
            "token_messages": self.token_msgs,
            "images_sent": self.images_sent,
            "malformed_sent": self.malformed_sent,
            "bridge_frames_rejected": rejected,
            "diagnostics": self.diagnostics,
            "violations": self.violations[:20],
            "violation_count": len(self.violations),
        })
        if self.violations:
            ok = False
        if report.get("failures"):
            ok = False
        if not self.gripper_values:
            report.setdefault("failures", []).append("no gripper command received")
            ok = False
        if not self.diagnostics:
            report.setdefault("failures", []).append("no diagnostics received")
            ok = False
        elif rejected < self.malformed_sent * 0.5:
            # Best-effort images may be lost on the way, but not most of them.
            report.setdefault("failures", []).append(
                f"bridge counted {rejected} rejected of {self.malformed_sent} malformed")
            ok = False
        report["ok"] = ok
        with open(a.out, "w") as f:
            json.dump(report, f, indent=1)
        print(json.dumps(report))
        return 0 if ok else 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--jpeg", required=True)
    p.add_argument("--instruction", default="pick up the red cube")
    p.add_argument("--joint-names", required=True)
    p.add_argument("--joints", required=True)
    p.add_argument("--tool", type=float, nargs=3, required=True)
    p.add_argument("--workspace", type=float, nargs=6, required=True)
    p.add_argument("--max-linear-speed", type=float, default=0.3)
    p.add_argument("--max-angular-speed", type=float, default=1.5)
    p.add_argument("--max-linear-acceleration", type=float, default=3.0)
    p.add_argument("--gripper-open", type=float, default=0.04)
    p.add_argument("--gripper-closed", type=float, default=0.0)
    p.add_argument("--period", type=float, default=0.1)
    p.add_argument("--watchdog-timeout", type=float, default=0.2)
    p.add_argument("--warmup", type=float, default=60.0)
    p.add_argument("--phase", type=float, default=3.0)
    args = p.parse_args()
    random.seed(0)
    sys.exit(Peer(args).main())


if __name__ == "__main__":
    main()
