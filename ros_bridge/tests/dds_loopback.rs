//! RustDDS on loopback inside a fresh network namespace: two participants in one process
//! discover each other over `lo`; a 640×480 image crosses intact; the latched instruction
//! reaches a late subscriber.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vla_ros_bridge::msg::{Header, Image, StringMsg};
use vla_ros_bridge::netns::{isolate_test, skip_or_fail, Isolation};
use vla_ros_bridge::transport::{Qos, Transport};
use vla_ros_bridge::Ros2Transport;

fn wait_for<T: Clone>(slot: &Arc<Mutex<Option<T>>>, timeout: Duration) -> Option<T> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if let Some(v) = slot.lock().ok().and_then(|s| s.clone()) {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn dds_roundtrip_in_a_namespace() {
    match isolate_test("dds_roundtrip_in_a_namespace") {
        Isolation::Inside => {}
        Isolation::RanInChild => return,
        Isolation::Unavailable(why) => return skip_or_fail("dds_roundtrip_in_a_namespace", &why),
    }
    let mut a = Ros2Transport::with_domain("test_a", 42).expect("participant a");
    let mut b = Ros2Transport::with_domain("test_b", 42).expect("participant b");
    let latched = a
        .publisher::<StringMsg>("/vla/instruction", Qos::latched(1))
        .expect("publisher");
    latched
        .publish(StringMsg {
            data: "pick up the red cube".into(),
        })
        .expect("publish");
    let images = a
        .publisher::<Image>("/camera/front/image_raw", Qos::sensor_data(2))
        .expect("publisher");
    let got_img: Arc<Mutex<Option<Image>>> = Arc::new(Mutex::new(None));
    let g = got_img.clone();
    b.subscribe::<Image>(
        "/camera/front/image_raw",
        Qos::sensor_data(2),
        Box::new(move |m| {
            if let (Ok(m), Ok(mut s)) = (m, g.lock()) {
                *s = Some(m);
            }
        }),
    )
    .expect("subscribe");
    // Subscribe to the latched topic only now: transient local must replay it.
    let got_text: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let g = got_text.clone();
    b.subscribe::<StringMsg>(
        "/vla/instruction",
        Qos::latched(1),
        Box::new(move |m| {
            if let (Ok(m), Ok(mut s)) = (m, g.lock()) {
                *s = Some(m.data);
            }
        }),
    )
    .expect("subscribe");
    let img = vla_core::RgbImage::from_fn(640, 480, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let msg = vla_ros_bridge::image::encode_raw(&img, Header::now("cam"));
    let t0 = Instant::now();
    while got_img.lock().map(|s| s.is_none()).unwrap_or(true)
        && t0.elapsed() < Duration::from_secs(20)
    {
        images.publish(msg.clone()).expect("publish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = wait_for(&got_img, Duration::from_secs(1)).expect("image crossed DDS on lo");
    assert_eq!(got.data, msg.data);
    assert_eq!((got.width, got.height), (640, 480));
    let text = wait_for(&got_text, Duration::from_secs(10)).expect("latched instruction");
    assert_eq!(text, "pick up the red cube");
    eprintln!(
        "discovery + first image in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
}
