// Communicator: what data-parallel training needs from the ranks. LocalCommunicator is one
// process; MpiCommunicator (Open MPI) reduces CPU tensors; NcclCommunicator (CUDA builds) reduces
// GPU tensors with NCCL, bootstrapped over the MPI communicator it wraps.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace kvroute::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // This rank's index among the ranks on its host (picks its GPU), and how many ranks that host runs
  // (they share its cores).
  virtual int local_rank() const { return 0; }
  virtual int local_size() const { return 1; }
  // In-place sum over ranks of a contiguous f32 buffer, in buckets of bucket_elements.
  virtual void allreduce_sum(Tensor& buffer, int64_t bucket_elements) = 0;
  virtual void allreduce_sum(std::vector<double>& values) = 0;
  virtual void broadcast(Tensor& buffer, int root) = 0;
  // Overlap with the backward pass: start_allreduce queues the in-place sum of one contiguous f32
  // slice (every rank must start the same slices in the same order); finish_allreduce returns
  // when every queued sum is visible to later work. Synchronous by default.
  virtual void start_allreduce(Tensor& slice) { allreduce_sum(slice, slice.numel()); }
  virtual void finish_allreduce() {}
  // ZeRO (dist.zero): a flat buffer cut into world_size consecutive pieces, piece r of counts[r]
  // elements (ShardLayout). reduce_scatter_sum: `recv` (counts[rank] f32 elements) becomes the sum
  // over ranks of their piece `rank` of `send`. all_gather: in place, piece r of every rank's
  // `buffer` becomes rank r's (any dtype). gather: `full` on rank `root` (ignored elsewhere)
  // receives every rank's `piece` in rank order. Every rank calls each with the same counts.
  virtual void reduce_scatter_sum(const Tensor& send, Tensor& recv, const std::vector<int64_t>& counts);
  virtual void all_gather(Tensor& buffer, const std::vector<int64_t>& counts);
  virtual void gather(const Tensor& piece, Tensor& full, const std::vector<int64_t>& counts, int root);
  virtual void barrier() = 0;
  // Ends every rank promptly with `code` (MPI_Abort); the local version just exits.
  [[noreturn]] virtual void abort(int code) = 0;
  virtual std::string name() const = 0;
};

// dist.backend: auto (MPI when launched by mpirun), mpi, none (one process).
enum class Backend { Auto, Mpi, None };
const char* backend_name(Backend backend);

// One process, no communication (world size 1): make_communicator(Backend::None).
std::unique_ptr<Communicator> make_local_communicator();
std::unique_ptr<Communicator> make_communicator(Backend backend);
// True when this process was started by mpirun/mpiexec (Open MPI's environment).
bool launched_by_mpi();
// This process's rank in the launcher's environment (OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK),
// readable before any communicator exists; 0 when not launched by mpirun.
int launcher_rank();
// NCCL over the GPUs of `host` (its ranks, one GPU each, picked by local rank): device tensors are
// reduced with NCCL on a communication stream, everything else goes to `host`, which must outlive
// the result. Fails with a clear error in builds without CUDA (nccl_communicator_stub.cpp).
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& host);

// The size of one all-reduce bucket, in f32 elements, for dist.bucket_mb megabytes.
int64_t bucket_elements(double bucket_mb);

}  // namespace kvroute::dist
