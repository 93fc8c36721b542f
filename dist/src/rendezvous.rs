//! Where a rank finds its peers: the torchrun / Slurm / Open MPI environment conventions.
use crate::DistError;

/// c10d's default TCPStore port (`TCPStoreOptions::kDefaultPort`), used when MASTER_PORT
/// is unset (Slurm and mpirun do not set it).
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// This process's place in a multi-process job and where rank 0 serves the rendezvous store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    /// Global rank, `0..world_size`; rank 0 hosts the TCPStore.
    pub rank: usize,
    /// Number of processes in the job.
    pub world_size: usize,
    /// Rank on this node: the CUDA device index an NCCL rank drives.
    pub local_rank: usize,
    /// Address of rank 0's host, as every rank can reach it.
    pub master_addr: String,
    /// Port of rank 0's TCPStore.
    pub master_port: u16,
}

/// The launcher conventions, in order of precedence: one family supplies rank, world size
/// and local rank together, so torchrun's variables inside a Slurm allocation win over
/// Slurm's, and variables of different launchers are never mixed.
const FAMILIES: [(&str, &str, &str); 3] = [
    ("RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
    (
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
    ),
];

impl Rendezvous {
    /// A single-process "job" on loopback: useful for tests and for running distributed
    /// code paths without a launcher.
    pub fn single(master_port: u16) -> Self {
        Self {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".to_owned(),
            master_port,
        }
    }

    /// Reads the launcher's environment (see [`Rendezvous::from_lookup`]).
    pub fn from_env() -> Result<Option<Self>, DistError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses the launcher variables through `lookup`, so callers (and tests) need not
    /// touch the process environment.
    ///
    /// `None` when no world size is set (not launched as a distributed job). The world
    /// size comes from WORLD_SIZE, else SLURM_NTASKS, else OMPI_COMM_WORLD_SIZE; rank and
    /// local rank come from the same launcher (RANK / LOCAL_RANK, SLURM_PROCID /
    /// SLURM_LOCALID, OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_LOCAL_RANK). The local rank
    /// defaults to the rank, MASTER_ADDR to 127.0.0.1 and MASTER_PORT to 29500. Errors
    /// name the variable and its bad value.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, DistError> {
        let Some((rank_var, size_var, local_var, size_value)) = FAMILIES
            .iter()
            .find_map(|&(r, s, l)| lookup(s).map(|v| (r, s, l, v)))
        else {
            return Ok(None);
        };
        let world_size: usize = parse(size_var, &size_value)?;
        if world_size == 0 {
            return Err(env_error(size_var, &size_value, "must be at least 1"));
        }
        let rank_value = lookup(rank_var).ok_or(DistError::MissingEnv {
            var: rank_var,
            set_var: size_var,
        })?;
        let rank: usize = parse(rank_var, &rank_value)?;
        if rank >= world_size {
            return Err(env_error(
                rank_var,
                &rank_value,
                &format!("must be below {size_var}={world_size}"),
            ));
        }
        let local_rank = match lookup(local_var) {
            Some(value) => {
                let local: usize = parse(local_var, &value)?;
                if local >= world_size {
                    return Err(env_error(
                        local_var,
                        &value,
                        &format!("must be below {size_var}={world_size}"),
                    ));
                }
                local
            }
            None => rank,
        };
        let master_addr = match lookup("MASTER_ADDR") {
            Some(value) if value.trim().is_empty() => {
                return Err(env_error("MASTER_ADDR", &value, "is empty"));
            }
            Some(value) => value.trim().to_owned(),
            None => "127.0.0.1".to_owned(),
        };
        let master_port = match lookup("MASTER_PORT") {
            Some(value) => {
                let port: u16 = parse("MASTER_PORT", &value)?;
                if port == 0 {
                    return Err(env_error(
                        "MASTER_PORT",
                        &value,
                        "must be a fixed port, not 0",
                    ));
                }
                port
            }
            None => DEFAULT_MASTER_PORT,
        };
        Ok(Some(Self {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
        }))
    }
}

fn env_error(var: &'static str, value: &str, reason: &str) -> DistError {
    DistError::Env {
        var,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse<T: std::str::FromStr>(var: &'static str, value: &str) -> Result<T, DistError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e: T::Err| env_error(var, value, &format!("is not a valid number ({e})")))
}
