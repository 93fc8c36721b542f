//! Two ranks in two threads of this process, meeting over c10d's TCPStore and Gloo on
//! 127.0.0.1; plus the launcher-variable parsing.
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tch::{Kind, Tensor};
use vla_dist::{Backend, DistError, ProcessGroup, Rendezvous};

const TIMEOUT: Duration = Duration::from_secs(30);
/// A test that has not finished by then is hung: fail it instead of blocking the run.
const HANG: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn rendezvous(rank: usize, world_size: usize, port: u16) -> Rendezvous {
    Rendezvous {
        rank,
        world_size,
        local_rank: rank,
        master_addr: "127.0.0.1".to_owned(),
        master_port: port,
    }
}

/// Runs `body` as ranks 0 and 1 of a fresh Gloo group, one thread each; returns their
/// results in rank order.
fn two_ranks<T, F>(body: F) -> [T; 2]
where
    T: Send + 'static,
    F: Fn(&ProcessGroup) -> T + Send + Sync + Clone + 'static,
{
    let port = free_port();
    let (tx, rx) = mpsc::channel();
    for rank in 0..2 {
        let tx = tx.clone();
        let body = body.clone();
        thread::spawn(move || {
            let pg = ProcessGroup::new(&rendezvous(rank, 2, port), Backend::Gloo, TIMEOUT)
                .unwrap_or_else(|e| panic!("rank {rank}: {e}"));
            assert_eq!(
                (pg.rank(), pg.world_size(), pg.backend()),
                (rank, 2, Backend::Gloo)
            );
            let out = body(&pg);
            // Keep both groups alive until both bodies are done.
            pg.barrier().unwrap_or_else(|e| panic!("rank {rank}: {e}"));
            let _ = tx.send((rank, out));
        });
    }
    drop(tx);
    let mut results: [Option<T>; 2] = [None, None];
    for _ in 0..2 {
        match rx.recv_timeout(HANG) {
            Ok((rank, out)) => results[rank] = Some(out),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("a rank hung"),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("a rank panicked"),
        }
    }
    results.map(|r| r.expect("each rank reports once"))
}

fn values<T: tch::kind::Element + Copy>(t: &Tensor) -> Vec<T> {
    Vec::<T>::try_from(&t.flatten(0, -1)).expect("tensor to vec")
}

#[test]
fn all_reduce_sums_each_tensor_elementwise_on_both_ranks() {
    let results = two_ranks(|pg| {
        let r = pg.rank() as f64;
        let mut ts = vec![Tensor::from_slice(&[1.0f32, 2.0, 3.0]) * (r + 1.0)];
        pg.all_reduce_sum(&mut ts).expect("all_reduce_sum");
        values::<f32>(&ts[0])
    });
    for got in results {
        assert_eq!(got, vec![3.0, 6.0, 9.0]);
    }
}

#[test]
fn all_reduce_mixes_shapes_and_dtypes_in_one_call_without_mixing_tensors() {
    let results = two_ranks(|pg| {
        let r = pg.rank() as i64;
        let mut ts = vec![
            // Two f32 tensors of the same shape: c10d's plain allreduce would also sum
            // them with each other; each must only be summed across ranks.
            Tensor::from_slice(&[1.0f32, 2.0, 3.0]) + (r as f64),
            Tensor::from_slice(&[100.0f64, 200.0]).reshape([2, 1]) * (r + 1),
            Tensor::from_slice(&[10.0f32, 20.0, 30.0]) * (r + 1),
            Tensor::arange(6, (Kind::Float, tch::Device::Cpu)).reshape([2, 3]) * (r + 1),
            Tensor::from_slice(&[0.25f64]) * (r + 1),
            // Non-contiguous (a transposed view): still summed in place.
            Tensor::arange(6, (Kind::Double, tch::Device::Cpu))
                .reshape([2, 3])
                .tr(),
            // Non-contiguous and alone in its dtype: the plain allreduce path.
            Tensor::arange(6, (Kind::Int64, tch::Device::Cpu))
                .reshape([2, 3])
                .tr()
                * (r + 1),
        ];
        pg.all_reduce_sum(&mut ts).expect("all_reduce_sum");
        assert_eq!(ts[1].size(), vec![2, 1], "shape kept");
        assert_eq!(ts[1].kind(), Kind::Double, "dtype kept");
        assert_eq!(ts[5].size(), vec![3, 2], "shape kept");
        (
            values::<f32>(&ts[0]),
            values::<f64>(&ts[1]),
            values::<f32>(&ts[2]),
            values::<f32>(&ts[3]),
            values::<f64>(&ts[4]),
            values::<f64>(&ts[5]),
            values::<i64>(&ts[6]),
        )
    });
    for (a, b, c, d, e, f, g) in results {
        assert_eq!(a, vec![3.0, 5.0, 7.0]);
        assert_eq!(b, vec![300.0, 600.0]);
        assert_eq!(c, vec![30.0, 60.0, 90.0]);
        assert_eq!(d, vec![0.0, 3.0, 6.0, 9.0, 12.0, 15.0]);
        assert_eq!(e, vec![0.75]);
        // transposed arange(6).reshape(2,3) read row-major, doubled.
        assert_eq!(f, vec![0.0, 6.0, 2.0, 8.0, 4.0, 10.0]);
        assert_eq!(g, vec![0, 9, 3, 12, 6, 15]);
    }
}

#[test]
fn broadcast_from_rank_one_overwrites_rank_zero() {
    let results = two_ranks(|pg| {
        let mut ts = if pg.rank() == 1 {
            vec![
                Tensor::from_slice(&[7.0f32, 8.0, 9.0]),
                Tensor::from_slice(&[-1.5f64, 2.5]),
            ]
        } else {
            vec![
                Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)),
                Tensor::zeros([2], (Kind::Double, tch::Device::Cpu)),
            ]
        };
        pg.broadcast(&mut ts, 1).expect("broadcast");
        (values::<f32>(&ts[0]), values::<f64>(&ts[1]))
    });
    for (a, b) in results {
        assert_eq!(a, vec![7.0, 8.0, 9.0]);
        assert_eq!(b, vec![-1.5, 2.5]);
    }
}

/// c10d's Reducer (DDP's engine) averages gradients over the ranks during backward, step
/// after step, and gives a parameter the step's graph never reached the zero gradient DDP
/// gives it with `find_unused_parameters`.
#[test]
fn reducer_averages_gradients_during_backward() {
    let [r0, r1] = two_ranks(|pg| {
        let rank = pg.rank() as f32;
        let mut w = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).set_requires_grad(true);
        // Spread over two buckets (the first capped at 8 bytes).
        let v = Tensor::from_slice(&[0.5f32; 4]).set_requires_grad(true);
        let mut unused = Tensor::from_slice(&[7.0f32, 7.0]).set_requires_grad(true);
        let reducer = pg
            .reducer(
                &[w.shallow_clone(), v.shallow_clone(), unused.shallow_clone()],
                16,
                8,
                true,
            )
            .unwrap_or_else(|e| panic!("rank {rank}: {e}"));
        let mut seen = Vec::new();
        for step in 1..=3 {
            let scale = (rank + 1.0) * step as f32;
            let x = Tensor::from_slice(&[scale, 2.0 * scale, 3.0 * scale]);
            let loss = (&w * &x).sum(Kind::Float) + (&v * f64::from(scale)).sum(Kind::Float);
            reducer
                .prepare_for_backward(std::slice::from_ref(&loss))
                .unwrap_or_else(|e| panic!("rank {rank}: {e}"));
            loss.backward();
            seen.push((values::<f32>(&w.grad()), values::<f32>(&v.grad())));
            w.zero_grad();
            let mut vv = v.shallow_clone();
            vv.zero_grad();
        }
        let unused_grad = unused.grad();
        let unused_grad = if unused_grad.defined() {
            values::<f32>(&unused_grad)
        } else {
            Vec::new()
        };
        unused.zero_grad();
        (seen, unused_grad)
    });
    assert_eq!(r0, r1, "both ranks end with the same gradients");
    for (step, (w, v)) in r0.0.iter().enumerate() {
        // The mean of rank 0's (1·s) and rank 1's (2·s) inputs: 1.5·s.
        let s = 1.5 * (step + 1) as f32;
        assert_eq!(w, &vec![s, 2.0 * s, 3.0 * s], "step {step}");
        assert_eq!(v, &vec![s; 4], "step {step}");
    }
    assert!(r0.1.iter().all(|&g| g == 0.0), "{:?}", r0.1);
}

#[test]
fn barrier_returns_on_both_ranks() {
    let results = two_ranks(|pg| {
        for _ in 0..3 {
            pg.barrier()?;
        }
        Ok::<_, DistError>(pg.rank())
    });
    assert_eq!(results.map(|r| r.expect("barrier")), [0, 1]);
}

#[test]
fn all_reduce_f64_sums_plain_numbers() {
    let results = two_ranks(|pg| {
        let r = pg.rank() as f64;
        let mut v = [r, 10.0, 0.5 + r];
        pg.all_reduce_f64(&mut v).expect("all_reduce_f64");
        v
    });
    for v in results {
        assert_eq!(v, [1.0, 20.0, 2.0]);
    }
}

#[test]
fn collective_errors_carry_c10d_message() {
    let results = two_ranks(|pg| {
        // Out-of-range root is refused before reaching c10d, identically on both ranks.
        let mut ts = vec![Tensor::zeros([1], (Kind::Float, tch::Device::Cpu))];
        pg.broadcast(&mut ts, 2).map_err(|e| e.to_string())
    });
    for r in results {
        let msg = r.expect_err("root 2 of 2 must fail");
        assert!(msg.contains("root 2"), "{msg}");
    }
}

#[test]
fn single_rank_group_works() {
    let pg = ProcessGroup::new(&Rendezvous::single(free_port()), Backend::Gloo, TIMEOUT)
        .expect("world of one");
    let mut v = [4.0, 5.0];
    pg.all_reduce_f64(&mut v).expect("all_reduce_f64");
    assert_eq!(v, [4.0, 5.0]);
    pg.barrier().expect("barrier");
}

/// Runs `f` on a thread and fails the test if it has not returned within `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("hung instead of timing out")
}

#[test]
fn rank_zero_alone_times_out() {
    let port = free_port();
    let start = Instant::now();
    let result = within(Duration::from_secs(30), move || {
        ProcessGroup::new(
            &rendezvous(0, 2, port),
            Backend::Gloo,
            Duration::from_secs(2),
        )
    });
    let elapsed = start.elapsed();
    let err = result.expect_err("no peer: must fail");
    assert!(
        matches!(
            err,
            DistError::Timeout {
                rank: 0,
                world_size: 2,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "127.0.0.1:{port} as rank 0 of 2 timed out after 2 s"
        )),
        "{msg}"
    );
    assert!(
        elapsed >= Duration::from_millis(1500),
        "gave up too early: {elapsed:?}"
    );
}

#[test]
fn rank_one_without_server_times_out() {
    let port = free_port();
    let result = within(Duration::from_secs(30), move || {
        ProcessGroup::new(
            &rendezvous(1, 2, port),
            Backend::Gloo,
            Duration::from_secs(2),
        )
    });
    let err = result.expect_err("no server: must fail");
    assert!(matches!(err, DistError::Timeout { rank: 1, .. }), "{err}");
}

#[test]
fn rank_zero_reports_a_taken_port() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let err = ProcessGroup::new(
        &rendezvous(0, 2, port),
        Backend::Gloo,
        Duration::from_secs(2),
    )
    .expect_err("port in use");
    assert!(matches!(err, DistError::Listen { .. }), "{err}");
}

#[cfg(not(feature = "nccl"))]
#[test]
fn nccl_without_the_feature_is_a_clear_error() {
    // Refused before any rendezvous: returns at once although no peer exists.
    let err = ProcessGroup::new(&rendezvous(0, 2, free_port()), Backend::Nccl, TIMEOUT)
        .expect_err("no nccl in this build");
    assert!(matches!(err, DistError::NoNccl));
    assert!(err.to_string().contains("--features nccl"), "{err}");
}

#[test]
fn backend_names_round_trip() {
    for b in [Backend::Gloo, Backend::Nccl] {
        assert_eq!(b.to_string().parse::<Backend>().expect("parse"), b);
    }
    assert_eq!("NCCL".parse::<Backend>().expect("parse"), Backend::Nccl);
    assert!("mpi".parse::<Backend>().is_err());
}

// ---- launcher variables ----

fn parse(vars: &[(&str, &str)]) -> Result<Option<Rendezvous>, DistError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Rendezvous::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn no_world_size_means_not_distributed() {
    assert_eq!(parse(&[]).expect("ok"), None);
    assert_eq!(
        parse(&[("RANK", "0"), ("MASTER_ADDR", "10.0.0.1")]).expect("ok"),
        None
    );
}

#[test]
fn torchrun_variables() {
    let rv = parse(&[
        ("RANK", "3"),
        ("WORLD_SIZE", "8"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "10.0.0.1"),
        ("MASTER_PORT", "12345"),
    ])
    .expect("ok")
    .expect("distributed");
    assert_eq!(
        rv,
        Rendezvous {
            rank: 3,
            world_size: 8,
            local_rank: 1,
            master_addr: "10.0.0.1".into(),
            master_port: 12345,
        }
    );
}

#[test]
fn defaults_for_address_port_and_local_rank() {
    let rv = parse(&[("RANK", "1"), ("WORLD_SIZE", "2")])
        .expect("ok")
        .expect("distributed");
    assert_eq!(
        (rv.local_rank, rv.master_addr.as_str(), rv.master_port),
        (1, "127.0.0.1", 29500)
    );
}

#[test]
fn slurm_and_open_mpi_fallbacks() {
    let slurm = parse(&[
        ("SLURM_PROCID", "5"),
        ("SLURM_NTASKS", "6"),
        ("SLURM_LOCALID", "2"),
    ])
    .expect("ok")
    .expect("distributed");
    assert_eq!((slurm.rank, slurm.world_size, slurm.local_rank), (5, 6, 2));
    let ompi = parse(&[
        ("OMPI_COMM_WORLD_RANK", "1"),
        ("OMPI_COMM_WORLD_SIZE", "4"),
        ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
    ])
    .expect("ok")
    .expect("distributed");
    assert_eq!((ompi.rank, ompi.world_size, ompi.local_rank), (1, 4, 0));
    // torchrun inside a Slurm allocation: torchrun's variables win, none are mixed.
    let both = parse(&[
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("SLURM_PROCID", "7"),
        ("SLURM_NTASKS", "8"),
        ("SLURM_LOCALID", "3"),
    ])
    .expect("ok")
    .expect("distributed");
    assert_eq!((both.rank, both.world_size, both.local_rank), (0, 2, 0));
}

#[test]
fn bad_values_name_the_variable_and_value() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("RANK", "0"), ("WORLD_SIZE", "two")],
            "WORLD_SIZE=\"two\"",
        ),
        (&[("RANK", "0"), ("WORLD_SIZE", "0")], "WORLD_SIZE=\"0\""),
        (&[("RANK", "-1"), ("WORLD_SIZE", "2")], "RANK=\"-1\""),
        (
            &[("RANK", "2"), ("WORLD_SIZE", "2")],
            "RANK=\"2\" must be below WORLD_SIZE=2",
        ),
        (
            &[("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "x")],
            "LOCAL_RANK=\"x\"",
        ),
        (
            &[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "70000")],
            "MASTER_PORT=\"70000\"",
        ),
        (
            &[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "0")],
            "MASTER_PORT=\"0\"",
        ),
        (
            &[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", " ")],
            "MASTER_ADDR=\" \"",
        ),
        (
            &[("SLURM_NTASKS", "4")],
            "SLURM_PROCID is unset while SLURM_NTASKS is set",
        ),
    ];
    for (vars, expected) in cases {
        let err = parse(vars).expect_err(&format!("{vars:?} must fail"));
        let msg = err.to_string();
        assert!(
            msg.contains(expected),
            "{vars:?}: {msg:?} lacks {expected:?}"
        );
    }
}

/// With the `nccl` feature: a one-rank NCCL group on cuda:0 where a GPU exists (c10d's
/// NCCL path end to end), and a clean error, not a crash, where none does.
#[cfg(feature = "nccl")]
#[test]
fn nccl_single_rank_or_clean_error_without_gpu() {
    let result = within(Duration::from_secs(120), move || {
        let pg = ProcessGroup::new(&Rendezvous::single(free_port()), Backend::Nccl, TIMEOUT)?;
        let mut v = [1.5, -2.0];
        pg.all_reduce_f64(&mut v)?;
        let mut ts = vec![
            Tensor::from_slice(&[1.0f32, 2.0]).to_device(pg.device()),
            Tensor::from_slice(&[3.0f64]).to_device(pg.device()),
        ];
        pg.all_reduce_sum(&mut ts)?;
        pg.broadcast(&mut ts, 0)?;
        pg.barrier()?;
        Ok::<_, DistError>((v, values::<f32>(&ts[0].to_device(tch::Device::Cpu))))
    });
    if tch::Cuda::is_available() {
        let (v, t) = result.expect("one-rank NCCL group");
        assert_eq!(v, [1.5, -2.0]);
        assert_eq!(t, vec![1.0, 2.0]);
    } else {
        let err = result.expect_err("no GPU: NCCL must refuse");
        eprintln!("without a GPU: {err}");
        assert!(
            matches!(
                err,
                DistError::Rendezvous {
                    stage: "nccl init",
                    ..
                } | DistError::Collective { .. }
            ),
            "{err}"
        );
    }
}
