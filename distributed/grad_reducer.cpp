#include "distributed/grad_reducer.h"

#include <algorithm>

namespace kvroute::dist {

GradientReducer::GradientReducer(layers::Transformer& model, Communicator& comm, int64_t bucket_elements)
    : model_(model), comm_(comm) {
  bucket_elements = std::max<int64_t>(bucket_elements, 1);
  layers::NamedParameters params = model.parameters();
  std::vector<int64_t> offsets;
  int64_t offset = 0;
  for (const auto& [name, p] : params) {
    offsets.push_back(offset);
    offset += p.data().numel();
  }
  // Walk the parameters backwards, closing a bucket once it holds bucket_elements.
  bucket_of_parameter_.assign(params.size(), 0);
  Bucket current;
  current.end = offset;
  for (size_t i = params.size(); i-- > 0;) {
    current.begin = offsets[i];
    ++current.parameters;
    bucket_of_parameter_[i] = buckets_.size();
    if (current.end - current.begin >= bucket_elements || i == 0) {
      buckets_.push_back(current);
      current = Bucket{};
      current.end = offsets[i];
    }
  }
  for (size_t i = 0; i < params.size(); ++i) {
    const size_t bucket = bucket_of_parameter_[i];
    params[i].second.impl()->on_grad_accumulated = [this, bucket] { on_parameter_done(bucket); };
  }
}

GradientReducer::~GradientReducer() {
  for (auto& [name, p] : model_.parameters()) p.impl()->on_grad_accumulated = nullptr;
}

void GradientReducer::arm() {
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
    Tensor slice = model_.flat_gradients().slice(0, buckets_[next_].begin, buckets_[next_].end);
    comm_.start_allreduce(slice);
    ++next_;
  }
}

void GradientReducer::finish() {
  if (!armed_) return;
  for (Bucket& b : buckets_) b.pending = 0;
  start_ready();
  comm_.finish_allreduce();
  armed_ = false;
}

}  // namespace kvroute::dist
