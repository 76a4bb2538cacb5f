#include "distributed/grad_reducer.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/ops.h"

namespace kvroute::dist {

GradientReducer::GradientReducer(layers::Transformer& model, Communicator& comm, int64_t bucket_elements)
    : model_(model), comm_(comm), params_(model.parameters()) {
  bucket_elements = std::max<int64_t>(bucket_elements, 1);
  int64_t offset = 0;
  for (const auto& [name, p] : params_) {
    offsets_.push_back(offset);
    offset += p.data().numel();
  }
  // Walk the parameters backwards, closing a bucket once it holds bucket_elements.
  bucket_of_parameter_.assign(params_.size(), 0);
  Bucket current;
  current.end = offset;
  for (size_t i = params_.size(); i-- > 0;) {
    current.begin = offsets_[i];
    current.first = i;
    ++current.parameters;
    bucket_of_parameter_[i] = buckets_.size();
    if (current.end - current.begin >= bucket_elements || i == 0) {
      buckets_.push_back(current);
      current = Bucket{};
      current.end = offsets_[i];
    }
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    const size_t bucket = bucket_of_parameter_[i];
    params_[i].second.impl()->on_grad_accumulated = [this, bucket] { on_parameter_done(bucket); };
  }
}

GradientReducer::GradientReducer(layers::Transformer& model, Communicator& comm, int64_t bucket_elements,
                                 const ShardLayout& layout, Tensor& shard_grads)
    : GradientReducer(model, comm, bucket_elements) {
  KV_CHECK(layout.total == model.parameter_count() && layout.world == comm.world_size() && layout.rank == comm.rank(),
           "gradient reducer: a shard layout of {} elements over {} ranks for {} parameters over {}", layout.total,
           layout.world, model.parameter_count(), comm.world_size());
  KV_CHECK(shard_grads.numel() == layout.count() && shard_grads.is_contiguous() && shard_grads.dtype() == DType::F32,
           "gradient reducer: the shard's gradients must be {} contiguous f32 elements, got {}", layout.count(),
           shard_grads.str());
  layout_ = &layout;
  shard_grads_ = &shard_grads;
}

GradientReducer::~GradientReducer() {
  for (auto& [name, p] : model_.parameters()) p.impl()->on_grad_accumulated = nullptr;
}

void GradientReducer::arm(bool accumulate) {
  KV_CHECK(!accumulate || layout_ != nullptr, "gradient reducer: only ZeRO stage 2 accumulates into its piece");
  accumulate_ = accumulate;
  for (Bucket& b : buckets_) b.pending = b.parameters;
  next_ = 0;
  started_early_ = 0;
  armed_ = true;
}

void GradientReducer::on_parameter_done(size_t bucket) {
  if (!armed_) return;
  --buckets_[bucket].pending;
  const size_t before = next_;
  start_ready();
  started_early_ += static_cast<int64_t>(next_ - before);
}

void GradientReducer::start_ready() {
  while (next_ < buckets_.size() && buckets_[next_].pending <= 0) {
    if (layout_ != nullptr) {
      reduce_scatter(buckets_[next_]);
    } else {
      Tensor slice = model_.flat_gradients().slice(0, buckets_[next_].begin, buckets_[next_].end);
      comm_.start_allreduce(slice);
    }
    ++next_;
  }
}

void GradientReducer::reduce_scatter(const Bucket& bucket) {
  const Device device = shard_grads_->device();
  Tensor send = Tensor::empty({bucket.end - bucket.begin}, DType::F32, device);
  for (size_t i = bucket.first; i < bucket.first + static_cast<size_t>(bucket.parameters); ++i) {
    autograd::Variable& p = params_[i].second;
    const int64_t at = offsets_[i] - bucket.begin, n = p.data().numel();
    Tensor part = send.slice(0, at, at + n);
    if (p.grad().defined()) {
      part.copy_(p.grad().reshape({n}));
    } else {
      part.zero_();  // no layer read this parameter in this pass (unused K/V projections)
    }
    p.set_grad(Tensor());  // released: its sum lives in the owner's piece from here on
  }
  const std::vector<int64_t> counts = layout_->counts_in(bucket.begin, bucket.end);
  const int64_t mine = std::max(bucket.begin, layout_->begin()) - layout_->begin();
  Tensor recv = shard_grads_->slice(0, std::min(mine, layout_->count()),
                                    std::min(mine, layout_->count()) + counts[static_cast<size_t>(layout_->rank)]);
  if (!accumulate_) {
    comm_.reduce_scatter_sum(send, recv, counts);
    return;
  }
  Tensor sum = Tensor::empty({recv.numel()}, DType::F32, device);
  comm_.reduce_scatter_sum(send, sum, counts);
  if (sum.numel() > 0) ops::add_into(recv, sum, recv);
}

void GradientReducer::finish() {
  if (!armed_) return;
  for (Bucket& b : buckets_) b.pending = 0;
  start_ready();
  comm_.finish_allreduce();
  armed_ = false;
}

}  // namespace kvroute::dist
