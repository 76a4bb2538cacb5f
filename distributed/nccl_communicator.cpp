// NcclCommunicator: GPU tensors are summed with NCCL on a communication stream of their own,
// ordered against the compute stream with events (so buckets reduce while the backward pass
// computes); host values and CPU tensors go to the wrapped MPI communicator, which also carries
// the ncclUniqueId from rank 0 to everyone. Built only with the CUDA backend.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>

#include "core/device_runtime.h"
#include "core/error.h"
#include "distributed/communicator.h"

namespace kvroute::dist {

namespace {

void check_nccl(ncclResult_t rc, const char* what) {
  KV_CHECK(rc == ncclSuccess, "NCCL error in {}: {} ({})", what, ncclGetErrorString(rc), static_cast<int>(rc));
}

void check_cuda(cudaError_t rc, const char* what) {
  KV_CHECK(rc == cudaSuccess, "CUDA error in {}: {} ({})", what, cudaGetErrorString(rc), static_cast<int>(rc));
}

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(Communicator& host)
      : host_(host), device_(device_runtime::select_cuda_device(host.local_rank(), "nccl").index) {
    ncclUniqueId id;
    static_assert(sizeof(id) % 4 == 0);
    Tensor id_buffer = Tensor::zeros({static_cast<int64_t>(sizeof(id) / 4)}, DType::I32);
    if (host.rank() == 0) {
      check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
      std::memcpy(id_buffer.raw_data(), &id, sizeof id);
    }
    host.broadcast(id_buffer, 0);
    std::memcpy(&id, id_buffer.raw_data(), sizeof id);
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    check_nccl(ncclCommInitRank(&comm_, host.world_size(), id, host.rank()), "ncclCommInitRank");
    check_cuda(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    check_cuda(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming), "cudaEventCreate");
    check_cuda(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "cudaEventCreate");
  }
  ~NcclCommunicator() override {
    cudaStreamSynchronize(comm_stream_);
    ncclCommDestroy(comm_);
    cudaEventDestroy(ready_);
    cudaEventDestroy(done_);
    cudaStreamDestroy(comm_stream_);
  }

  int rank() const override { return host_.rank(); }
  int world_size() const override { return host_.world_size(); }
  int local_rank() const override { return host_.local_rank(); }
  int local_size() const override { return host_.local_size(); }

  void allreduce_sum(Tensor& buffer, int64_t bucket_elements) override {
    if (buffer.device().is_cpu()) return host_.allreduce_sum(buffer, bucket_elements);
    check_device_buffer(buffer, "allreduce");
    bucket_elements = std::max<int64_t>(bucket_elements, 1);
    wait_for_compute();
    float* data = buffer.data<float>();
    for (int64_t begin = 0; begin < buffer.numel(); begin += bucket_elements) {
      const size_t count = static_cast<size_t>(std::min(bucket_elements, buffer.numel() - begin));
      check_nccl(ncclAllReduce(data + begin, data + begin, count, ncclFloat, ncclSum, comm_, comm_stream_),
                 "ncclAllReduce");
    }
    finish_allreduce();
  }
  void allreduce_sum(std::vector<double>& values) override { host_.allreduce_sum(values); }

  void broadcast(Tensor& buffer, int root) override {
    if (buffer.device().is_cpu()) return host_.broadcast(buffer, root);
    KV_CHECK(buffer.is_contiguous() && buffer.device() == Device::cuda(device_),
             "nccl broadcast: expected a contiguous buffer on cuda:{}, got {}", device_, buffer.str());
    wait_for_compute();
    check_nccl(ncclBroadcast(buffer.raw_data(), buffer.raw_data(), buffer.nbytes(), ncclUint8, root, comm_, comm_stream_),
               "ncclBroadcast");
    finish_allreduce();
  }

  // ZeRO: one collective per piece, rooted at its owner (NCCL's own ReduceScatter/AllGather need
  // equal pieces), grouped so NCCL runs them together. Synchronous with the host: the send
  // buffers are temporaries of the caller.
  void reduce_scatter_sum(const Tensor& send, Tensor& recv, const std::vector<int64_t>& counts) override {
    if (send.device().is_cpu()) return host_.reduce_scatter_sum(send, recv, counts);
    check_device_buffer(send, "reduce_scatter");
    if (recv.numel() > 0) check_device_buffer(recv, "reduce_scatter");
    KV_CHECK(static_cast<int>(counts.size()) == world_size() && recv.numel() == counts[static_cast<size_t>(rank())],
             "nccl reduce_scatter: {} counts for {} ranks, piece {}", counts.size(), world_size(), recv.str());
    wait_for_compute();
    const float* in = send.data<float>();
    int64_t offset = 0;
    check_nccl(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < world_size(); ++r) {
      const size_t n = static_cast<size_t>(counts[static_cast<size_t>(r)]);
      if (n > 0) {
        check_nccl(ncclReduce(in + offset, r == rank() ? recv.data<float>() : nullptr, n, ncclFloat, ncclSum, r, comm_,
                              comm_stream_),
                   "ncclReduce");
      }
      offset += counts[static_cast<size_t>(r)];
    }
    check_nccl(ncclGroupEnd(), "ncclGroupEnd");
    KV_CHECK(offset == send.numel(), "nccl reduce_scatter: counts sum to {}, the buffer holds {}", offset, send.numel());
    check_cuda(cudaStreamSynchronize(comm_stream_), "cudaStreamSynchronize");
  }
  void all_gather(Tensor& buffer, const std::vector<int64_t>& counts) override {
    if (buffer.device().is_cpu()) return host_.all_gather(buffer, counts);
    KV_CHECK(buffer.is_contiguous() && buffer.device() == Device::cuda(device_) &&
                 static_cast<int>(counts.size()) == world_size(),
             "nccl all_gather: expected a contiguous buffer on cuda:{} and {} counts, got {}", device_, world_size(),
             buffer.str());
    wait_for_compute();
    char* data = static_cast<char*>(buffer.raw_data());
    const size_t element = buffer.element_size();
    int64_t offset = 0;
    check_nccl(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < world_size(); ++r) {
      const size_t bytes = static_cast<size_t>(counts[static_cast<size_t>(r)]) * element;
      char* piece = data + static_cast<size_t>(offset) * element;
      if (bytes > 0) check_nccl(ncclBroadcast(piece, piece, bytes, ncclUint8, r, comm_, comm_stream_), "ncclBroadcast");
      offset += counts[static_cast<size_t>(r)];
    }
    check_nccl(ncclGroupEnd(), "ncclGroupEnd");
    KV_CHECK(offset == buffer.numel(), "nccl all_gather: counts sum to {}, the buffer holds {}", offset, buffer.numel());
    finish_allreduce();
  }
  void gather(const Tensor& piece, Tensor& full, const std::vector<int64_t>& counts, int root) override {
    KV_CHECK(piece.device().is_cpu(), "nccl gather: gathers host tensors only (copy {} to the host first)", piece.str());
    host_.gather(piece, full, counts, root);
  }

  void start_allreduce(Tensor& slice) override {
    if (slice.device().is_cpu()) return host_.allreduce_sum(slice, slice.numel());
    check_device_buffer(slice, "start_allreduce");
    wait_for_compute();  // the slice's gradients are queued on the compute stream before this point
    check_nccl(ncclAllReduce(slice.raw_data(), slice.raw_data(), static_cast<size_t>(slice.numel()), ncclFloat, ncclSum,
                             comm_, comm_stream_),
               "ncclAllReduce");
  }

  void finish_allreduce() override {
    // Later compute-stream work (scaling, clipping, AdamW) waits for every queued reduction; the
    // host does not block.
    check_cuda(cudaEventRecord(done_, comm_stream_), "cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(compute_stream(), done_, 0), "cudaStreamWaitEvent");
  }

  void barrier() override {
    check_cuda(cudaStreamSynchronize(comm_stream_), "cudaStreamSynchronize");
    host_.barrier();
  }
  [[noreturn]] void abort(int code) override {
    ncclCommAbort(comm_);
    host_.abort(code);
    std::exit(code);  // not reached: the host communicator ends the process
  }
  std::string name() const override { return "nccl"; }

 private:
  cudaStream_t compute_stream() const { return static_cast<cudaStream_t>(device_runtime::cuda_stream(device_)); }

  void wait_for_compute() {
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    check_cuda(cudaEventRecord(ready_, compute_stream()), "cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(comm_stream_, ready_, 0), "cudaStreamWaitEvent");
  }

  void check_device_buffer(const Tensor& t, const char* what) const {
    KV_CHECK(t.dtype() == DType::F32 && t.is_contiguous() && t.device() == Device::cuda(device_),
             "nccl {}: expected a contiguous f32 buffer on cuda:{}, got {}", what, device_, t.str());
  }

  Communicator& host_;
  int device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& host) {
  return std::make_unique<NcclCommunicator>(host);
}

}  // namespace kvroute::dist
