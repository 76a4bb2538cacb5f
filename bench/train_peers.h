// The PyTorch peers of `kvroute bench train`: the same model, batch and steps in PyTorch, run as
// child processes (bench/peer_train_step.py on the CPU, bench/peer_gpu_train_step.py on a GPU),
// their tokens/s printed next to kvroute's.
#pragma once

#include <cstdint>
#include <string>

#include "train/config.h"

namespace kvroute::bench {

// CPU: PyTorch as is and with OMP_WAIT_POLICY=PASSIVE (Debian's build starves OpenBLAS's threads
// otherwise), and on a CPU with bf16 instructions both again under bf16 autocast; the best counts. GPU: eager and torch.compile with bf16 autocast. The
// interpreter is /usr/bin/python3 or KVROUTE_PYTHON; the scripts come from the source tree or
// KVROUTE_SOURCE_DIR. Prints one line per peer and the ratio of kvroute_tok_s to it.
// "MODEL NAME (ISA)" from /proc/cpuinfo: the CPU model and the widest vector instruction sets it
// has (AVX2, AVX-512, AVX512-BF16, AMX-BF16), for benchmark output.
std::string cpu_description();

// The peers' model, batch and routing arguments for a config ("--batch 8 --seq 256 ...").
std::string peer_shape_args(const train::RunConfig& config, int64_t global_batch_tokens);

void run_training_peers(const train::RunConfig& config, int64_t steps, int64_t global_batch_tokens, int threads,
                        double kvroute_tok_s);

}  // namespace kvroute::bench
