#include "eval/study_report.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "core/text.h"
#include "core/error.h"
#include "core/stats.h"

namespace kvroute::eval {

namespace {

// Losses of one (run, plan) by seed.
using BySeed = std::map<uint64_t, double>;

struct Index {
  const StudyInfo& info;
  const std::vector<StudyRow>& rows;

  BySeed losses(const std::string& run, const std::string& label) const {
    BySeed out;
    for (const StudyRow& r : rows)
      if (r.run == run && r.result.label == label) out[r.seed] = r.result.loss;
    return out;
  }
  // Plan labels of a run in measurement order.
  std::vector<std::string> labels(const std::string& run) const {
    std::vector<std::string> out;
    for (const StudyRow& r : rows)
      if (r.run == run && std::find(out.begin(), out.end(), r.result.label) == out.end()) out.push_back(r.result.label);
    return out;
  }
  const StudyRow* first(const std::string& run, const std::string& label = "") const {
    for (const StudyRow& r : rows)
      if (r.run == run && (label.empty() || r.result.label == label)) return &r;
    return nullptr;
  }
  // The first evenly spread plan of a run keeping exactly k layers.
  std::optional<std::string> even_plan_with(const std::string& run, size_t k) const {
    for (const StudyRow& r : rows)
      if (r.run == run && r.result.strategy == "even" && r.result.kept.size() == k) return r.result.label;
    return std::nullopt;
  }
  bool is_shallow(const std::string& run) const {
    const StudyRow* r = first(run);
    return r != nullptr && r->shallow;
  }
  std::vector<std::string> deep_runs() const {
    std::vector<std::string> out;
    for (const std::string& run : info.runs)
      if (first(run) != nullptr && !is_shallow(run)) out.push_back(run);
    return out;
  }
  std::vector<std::string> shallow_runs() const {  // by cache size, largest first
    std::vector<std::string> out;
    for (const std::string& run : info.runs)
      if (is_shallow(run)) out.push_back(run);
    std::sort(out.begin(), out.end(),
              [&](const std::string& a, const std::string& b) { return first(a)->num_layers > first(b)->num_layers; });
    return out;
  }
  bool is_explicit_baseline(const std::string& run) const {
    for (const auto& [r, b] : info.baseline_of)
      if (b == run) return true;
    return false;
  }
  // The study's baseline: the deep run named "baseline", else the first deep run of the study's
  // depth without routing that is no other run's explicit baseline.
  std::optional<std::string> baseline() const {
    std::optional<std::string> found;
    for (const std::string& run : deep_runs()) {
      if (first(run)->policy != "none") continue;
      if (run == "baseline") return run;
      if (!found && first(run)->num_layers == info.depth && !is_explicit_baseline(run)) found = run;
    }
    return found;
  }
  // A run's own baseline (explicit pair, else the study's), when it is measured, differs from the
  // run and has the run's depth.
  std::optional<std::string> baseline_for(const std::string& run) const {
    auto it = info.baseline_of.find(run);
    std::optional<std::string> b = it != info.baseline_of.end() ? std::optional<std::string>(it->second) : baseline();
    if (!b || *b == run || first(*b) == nullptr || first(run) == nullptr) return std::nullopt;
    if (first(*b)->num_layers != first(run)->num_layers) return std::nullopt;
    return b;
  }
  // R-CLA runs the paper's claims are checked on: routed stochastically, of the study's depth,
  // compared with the study's baseline (not a regime variant with a baseline of its own).
  std::vector<std::string> rcla_runs() const {
    std::vector<std::string> out;
    for (const std::string& run : deep_runs())
      if (first(run)->policy == "stochastic" && first(run)->num_layers == info.depth && !info.baseline_of.count(run))
        out.push_back(run);
    return out;
  }
};

std::vector<double> values(const BySeed& m) {
  std::vector<double> v;
  for (const auto& [seed, x] : m) v.push_back(x);
  return v;
}

// f(a[seed], b[seed]) over the seeds both have.
template <typename F>
std::vector<double> paired(const BySeed& a, const BySeed& b, F f) {
  std::vector<double> out;
  for (const auto& [seed, x] : a) {
    auto it = b.find(seed);
    if (it != b.end()) out.push_back(f(x, it->second));
  }
  return out;
}

std::string mean_sd(const std::vector<double>& v) {
  const Summary s = summarize(v);
  if (s.n == 0) return "-";
  return s.n < 2 ? fmt::format("{:.4f}", s.mean) : fmt::format("{:.4f} ± {:.4f}", s.mean, s.sd);
}

std::string interval(const Interval& ci, const char* spec = "{:+.4f}") {
  const std::string mean = fmt::format(fmt::runtime(spec), ci.mean);
  if (!ci.defined) return mean + (ci.n == 1 ? " (one seed, no interval)" : "");
  return fmt::format("{} [{}, {}]", mean, fmt::format(fmt::runtime(spec), ci.lo), fmt::format(fmt::runtime(spec), ci.hi));
}

std::string percent(const Interval& ci) {
  Interval p = ci;
  p.mean *= 100;
  p.lo *= 100;
  p.hi *= 100;
  return interval(p, "{:+.2f}%");
}

std::string per_seed(const std::vector<double>& v) {
  std::string out;
  for (double x : v) out += fmt::format("{}{:+.4f}", out.empty() ? "" : " ", x);
  return out;
}

// The comma-separated fields of one CSV line (no quoting: study names and labels hold no commas).
std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> f;
  for (size_t a = 0;;) {
    const size_t b = line.find(',', a);
    f.push_back(line.substr(a, b == std::string::npos ? std::string::npos : b - a));
    if (b == std::string::npos) break;
    a = b + 1;
  }
  return f;
}

// Calls line(text, line_no) for every line (1-based); returns the number of lines.
template <typename F>
size_t for_each_line(const std::string& text, F line) {
  size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    const size_t end = std::min(text.find('\n', pos), text.size());
    line(text.substr(pos, end - pos), ++line_no);
    pos = end + 1;
  }
  return line_no;
}

// Calls row(fields, line_no) for every non-empty line after the header, which must equal `header`
// (`what` names the kind of file in the error); an empty text is an error.
template <typename F>
void for_each_csv_row(const std::string& text, const std::string& path, const std::string& header, const char* what,
                      size_t fields, F row) {
  const size_t lines = for_each_line(text, [&](const std::string& line, size_t line_no) {
    if (line_no == 1) {
      KV_CHECK(line == header, "{}: line 1: not a study {} header (expected '{}')", path, what, header);
      return;
    }
    if (line.empty()) return;
    const std::vector<std::string> f = csv_fields(line);
    KV_CHECK(f.size() == fields, "{}: line {}: expected {} fields, got {}", path, line_no, fields, f.size());
    row(f, line_no);
  });
  KV_CHECK(lines >= 1, "{}: empty file (expected a study {})", path, what);
}

// A finite number in field `field` of line `line_no`, or an error naming the file and line.
double csv_number(const std::string& s, const std::string& path, size_t line_no, const char* field) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  KV_CHECK(used == s.size() && !s.empty() && std::isfinite(v), "{}: line {}: {} '{}' is not a finite number", path,
           line_no, field, kvroute::excerpt(s, 40));
  return v;
}

double kv_percent(const StudyInfo& info, size_t kept) { return 100.0 * static_cast<double>(kept) / info.depth; }

std::string layers_text(size_t k) { return fmt::format("{} layer{}", k, k == 1 ? "" : "s"); }

}  // namespace

const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::Holds: return "holds";
    case Verdict::DoesNotHold: return "does not hold";
    case Verdict::Inconclusive: return "inconclusive";
    case Verdict::Untestable: return "untestable at this budget";
  }
  return "?";
}

std::vector<Claim> check_claims(const StudyInfo& info, const std::vector<StudyRow>& rows) {
  const Index ix{info, rows};
  std::vector<Claim> claims;
  const std::string c1 = "R-CLA at full retention is within 2% of the baseline",
                    c2 = "At every cache budget, R-CLA with a shared cache beats a shallower full-cache model with the "
                         "same cache",
                    c3 = "From 100% to 25% retention the baseline degrades far more than R-CLA";
  const std::optional<std::string> base = ix.baseline();
  const std::vector<std::string> rcla = ix.rcla_runs();
  if (!base || rcla.empty()) {
    const std::string why = !base ? "the study has no baseline (a deep run without routing)"
                                  : "the study has no R-CLA run (router.policy=stochastic)";
    for (const std::string& c : {c1, c2, c3}) claims.push_back({c, Verdict::Inconclusive, why + "."});
    return claims;
  }
  const size_t L = static_cast<size_t>(info.depth);
  const std::optional<std::string> full = ix.even_plan_with(*base, L);
  // The lowest retention of the claim: 25% of the layers, or the smallest level measured above it.
  std::optional<std::string> low;
  size_t low_kept = 0;
  for (const StudyRow& r : rows) {
    if (r.run != *base || r.result.strategy != "even") continue;
    const size_t k = r.result.kept.size();
    if (k >= std::ceil(0.25 * static_cast<double>(L) - 1e-9) && (low_kept == 0 || k < low_kept)) {
      low = r.result.label;
      low_kept = k;
    }
  }
  for (const std::string& run : rcla) {
    // 1. Full retention within 2%: the relative paired difference's interval below +2%.
    {
      Claim c{c1 + " (" + run + ")", Verdict::Inconclusive, ""};
      const std::optional<std::string> rf = ix.even_plan_with(run, L);
      if (!full || !rf) {
        c.evidence = "no full-retention plan was measured.";
      } else {
        const BySeed b = ix.losses(*base, *full), r = ix.losses(run, *rf);
        const Interval rel = mean_ci95(paired(r, b, [](double x, double y) { return (x - y) / y; }));
        if (rel.defined && rel.hi < 0.02) c.verdict = Verdict::Holds;
        if (rel.defined && rel.lo > 0.02) c.verdict = Verdict::DoesNotHold;
        c.evidence = fmt::format("at 100% retention {} has loss {} against the baseline's {}: {} relative ({} seed{}).",
                                 run, mean_sd(values(r)), mean_sd(values(b)), percent(rel), rel.n, rel.n == 1 ? "" : "s");
      }
      claims.push_back(c);
    }
    // 2. Equal cache: at every shallow baseline's cache size, R-CLA's loss below the shallow model's.
    {
      Claim c{c2 + " (" + run + ")", Verdict::Inconclusive, ""};
      const std::vector<std::string> shallow = ix.shallow_runs();
      if (shallow.empty()) {
        c.evidence = "the study has no shallow baselines (shallow_baselines: true).";
      } else {
        bool all_better = true, some_worse = false;
        std::vector<std::string> parts, depth_fails;
        for (const std::string& s : shallow) {
          // The premise: the deep baseline with its full cache beats the shallow model.
          const StudyRow* sr0 = ix.first(s);
          if (full) {
            const Interval premise = mean_ci95(paired(ix.losses(*base, *full), ix.losses(s, sr0->result.label),
                                                      [](double x, double y) { return x - y; }));
            if (premise.defined && premise.mean >= 0)  // not better on average (noise alone: inconclusive)
              depth_fails.push_back(fmt::format("{} ({}: {})", s, layers_text(sr0->result.kept.size()), interval(premise)));
          }
        }
        for (const std::string& s : shallow) {
          const StudyRow* sr = ix.first(s);
          const size_t k = sr->result.kept.size();
          const std::optional<std::string> plan = ix.even_plan_with(run, k);
          if (!plan) {
            all_better = false;
            parts.push_back(layers_text(k) + ": not measured");
            continue;
          }
          const Interval d = mean_ci95(paired(ix.losses(run, *plan), ix.losses(s, sr->result.label),
                                              [](double x, double y) { return x - y; }));
          all_better = all_better && d.defined && d.hi < 0;
          some_worse = some_worse || (d.defined && d.lo > 0);
          parts.push_back(fmt::format("{} ({:.0f}%): {} vs {} = {}", layers_text(k), kv_percent(info, k),
                                      mean_sd(values(ix.losses(run, *plan))),
                                      mean_sd(values(ix.losses(s, sr->result.label))), interval(d)));
        }
        c.verdict = all_better ? Verdict::Holds : some_worse ? Verdict::DoesNotHold : Verdict::Inconclusive;
        c.evidence = fmt::format("loss of {} with a shared cache vs the shallow full-cache model, and the "
                                 "difference: {}.",
                                 run, fmt::join(parts, "; "));
        if (!depth_fails.empty()) {
          c.verdict = Verdict::Untestable;
          c.evidence = fmt::format("the deep baseline with its full cache does not beat {} (baseline minus shallow: "
                                   "{}), so depth does not pay yet at this budget. ",
                                   depth_fails.size() == shallow.size() ? "any of the shallow models" : "every shallow model",
                                   fmt::join(depth_fails, "; ")) + c.evidence;
        }
      }
      claims.push_back(c);
    }
    // 3. Degradation from full to low retention: the baseline's minus R-CLA's, per seed, above 0,
    //    and the baseline's mean degradation at least twice R-CLA's.
    {
      Claim c{c3 + " (" + run + ")", Verdict::Inconclusive, ""};
      const std::optional<std::string> rf = ix.even_plan_with(run, L);
      const std::optional<std::string> rl = low ? ix.even_plan_with(run, low_kept) : std::nullopt;
      if (!full || !low || !rf || !rl || low_kept == L) {
        c.evidence = "no plan at or near 25% retention was measured.";
      } else {
        const std::vector<double> db =
            paired(ix.losses(*base, *low), ix.losses(*base, *full), [](double x, double y) { return x - y; });
        const std::vector<double> dr =
            paired(ix.losses(run, *rl), ix.losses(run, *rf), [](double x, double y) { return x - y; });
        std::vector<double> diff;
        const BySeed bl = ix.losses(*base, *low), bf = ix.losses(*base, *full), ql = ix.losses(run, *rl),
                     qf = ix.losses(run, *rf);
        for (const auto& [seed, x] : bl)
          if (bf.count(seed) && ql.count(seed) && qf.count(seed)) diff.push_back((x - bf.at(seed)) - (ql.at(seed) - qf.at(seed)));
        // "Far more": the baseline's rise exceeds twice R-CLA's, per seed (no ratio: R-CLA's rise can be ~0).
        std::vector<double> twice_diff;
        for (const auto& [seed, x] : bl)
          if (bf.count(seed) && ql.count(seed) && qf.count(seed))
            twice_diff.push_back((x - bf.at(seed)) - 2 * std::max(ql.at(seed) - qf.at(seed), 0.0));
        const Interval d = mean_ci95(diff), twice = mean_ci95(twice_diff);
        if (d.defined && d.lo > 0 && twice.lo > 0) c.verdict = Verdict::Holds;
        if (d.defined && (d.hi < 0 || twice.hi < 0)) c.verdict = Verdict::DoesNotHold;
        c.evidence = fmt::format("from 100% to {:.0f}% ({} of {} layers) the baseline's loss rises by {}, {}'s by {}; "
                                 "baseline minus R-CLA: {}; baseline minus twice R-CLA: {}.",
                                 kv_percent(info, low_kept), low_kept, L, interval(mean_ci95(db)), run,
                                 interval(mean_ci95(dr)), interval(d), interval(twice));
      }
      claims.push_back(c);
    }
  }
  return claims;
}

std::string study_csv(const StudyInfo& info, const std::vector<StudyRow>& rows) {
  std::string csv = "run,seed,kind,policy,plan,strategy,kept,num_layers,kv_fraction,val_loss,perplexity,tokens,"
                    "kept_layers\n";
  for (const StudyRow& r : rows) {
    const std::string kept = fmt::format("{}", fmt::join(r.result.kept, " "));
    csv += fmt::format("{},{},{},{},{},{},{},{},{:.4f},{:.6f},{:.4f},{},{}\n", r.run, r.seed,
                       r.shallow ? "shallow" : "deep", r.policy, r.result.label, r.result.strategy,
                       r.result.kept.size(), r.num_layers, static_cast<double>(r.result.kept.size()) / info.depth,
                       r.result.loss, r.result.perplexity, r.result.tokens, kept);
  }
  return csv;
}

std::vector<StudyRow> study_rows_from_csv(const std::string& text, const std::string& path) {
  static const std::string header = "run,seed,kind,policy,plan,strategy,kept,num_layers,kv_fraction,val_loss,"
                                    "perplexity,tokens,kept_layers";
  std::vector<StudyRow> rows;
  for_each_csv_row(text, path, header, "results.csv", 13, [&](const std::vector<std::string>& f, size_t line_no) {
    auto number = [&](const std::string& s, const char* field) { return csv_number(s, path, line_no, field); };
    auto integer = [&](const std::string& s, const char* field, double hi) {
      const double v = number(s, field);
      KV_CHECK(v >= 0 && v <= hi && v == std::floor(v), "{}: line {}: {} '{}' is not an integer in [0, {:g}]", path,
               line_no, field, kvroute::excerpt(s, 40), hi);
      return v;
    };
    KV_CHECK(f[2] == "deep" || f[2] == "shallow", "{}: line {}: kind '{}': expected deep or shallow", path, line_no,
             kvroute::excerpt(f[2], 40));
    StudyRow r;
    r.run = f[0];
    r.seed = static_cast<uint64_t>(integer(f[1], "seed", 9e15));
    r.shallow = f[2] == "shallow";
    r.policy = f[3];
    r.result.label = f[4];
    r.result.strategy = f[5];
    r.num_layers = static_cast<int>(integer(f[7], "num_layers", 1 << 20));
    r.result.loss = number(f[9], "val_loss");
    r.result.perplexity = number(f[10], "perplexity");
    r.result.tokens = static_cast<int64_t>(integer(f[11], "tokens", 9e15));
    for (size_t a = 0; a < f[12].size();) {
      const size_t b = std::min(f[12].find(' ', a), f[12].size());
      r.result.kept.push_back(static_cast<int>(integer(f[12].substr(a, b - a), "kept_layers", 1 << 20)));
      a = b + 1;
    }
    KV_CHECK(r.result.kept.size() == static_cast<size_t>(integer(f[6], "kept", 1 << 20)),
             "{}: line {}: kept {} but {} kept layers listed", path, line_no, f[6], r.result.kept.size());
    rows.push_back(std::move(r));
  });
  return rows;
}

std::string study_markdown(const StudyInfo& info, const std::vector<StudyRow>& rows) {
  const Index ix{info, rows};
  std::set<uint64_t> seeds;
  for (const StudyRow& r : rows) seeds.insert(r.seed);
  std::string md = fmt::format(
      "# Study: {}\n\nBase config `{}`; study file `{}`; {} seed{} ({}). Validation loss of each model with a KV cache "
      "kept in the given layers (the others read the nearest kept layer below); mean ± sample standard deviation over "
      "the seeds, kept layers of {} in brackets.{}\n\n",
      info.name, info.base_config, info.source, seeds.size(), seeds.size() == 1 ? "" : "s", fmt::join(seeds, ", "),
      info.depth,
      info.plan_split > 0
          ? fmt::format(" Greedy keep-sets were chosen on {:g} of the validation windows (interleaved over the "
                        "whole split) and every loss is measured on the other {:g}.",
                        info.plan_split, 1 - info.plan_split)
          : "");
  // 0. The training budget: tokens per parameter, by distinct (tokens, tokens before, parameters).
  if (!info.budget.empty()) {
    std::map<std::tuple<int64_t, int64_t, int64_t>, std::vector<std::string>> by_budget;
    for (const std::string& run : info.runs)
      if (auto it = info.budget.find(run); it != info.budget.end())
        by_budget[{it->second.tokens, it->second.prior_tokens, it->second.parameters}].push_back(run);
    std::vector<std::string> parts;
    for (const auto& [b, runs] : by_budget) {
      const auto [tokens, prior, params] = b;
      const double per_param = static_cast<double>(tokens + std::max<int64_t>(prior, 0)) /
                               static_cast<double>(std::max<int64_t>(params, 1));
      const std::string seen =
          prior == 0  ? fmt::format("{:.3g}M tokens", tokens / 1e6)
          : prior > 0 ? fmt::format("{:.3g}M tokens here + {:.3g}M in the run that wrote model.init_from",
                                    tokens / 1e6, prior / 1e6)
                      : fmt::format("{:.3g}M tokens here, not counting the training of model.init_from (no "
                                    "kvroute state.json there)",
                                    tokens / 1e6);
      parts.push_back(fmt::format("{}{:.2f} ({}, {:.3g}M parameters: {})", prior < 0 ? "at least " : "", per_param,
                                  seen, params / 1e6, fmt::join(runs, ", ")));
    }
    md += fmt::format("Tokens per parameter: {}.\n\n", fmt::join(parts, "; "));
  }
  // 1. Mean +- sd by run and plan (plans of the first deep run as columns; others append theirs).
  const std::vector<std::string> deep = ix.deep_runs();
  std::vector<std::string> cols;
  for (const std::string& run : deep)
    for (const std::string& l : ix.labels(run))
      if (std::find(cols.begin(), cols.end(), l) == cols.end()) cols.push_back(l);
  md += "| model |";
  for (const std::string& c : cols) md += " " + c + " |";
  md += "\n|---|";
  for (size_t i = 0; i < cols.size(); ++i) md += "---|";
  md += "\n";
  for (const std::string& run : deep) {
    md += "| " + run + " |";
    for (const std::string& c : cols) {
      const StudyRow* r = ix.first(run, c);
      md += r == nullptr ? " - |"
                         : fmt::format(" {} ({}) |", mean_sd(values(ix.losses(run, c))), r->result.kept.size());
    }
    md += "\n";
  }
  const std::vector<std::string> shallow = ix.shallow_runs();
  if (!shallow.empty()) {
    md += fmt::format("\nEqual-cache baselines: full-cache models of fewer layers (same width, tokens and seeds); a "
                      "k-layer model's cache is k/{} of the deep models'.\n\n| model | cache | loss |\n|---|---|---|\n",
                      info.depth);
    for (const std::string& s : shallow) {
      const StudyRow* r = ix.first(s);
      md += fmt::format("| {} | {} ({:.0f}%) | {} |\n", s, layers_text(r->result.kept.size()),
                        kv_percent(info, r->result.kept.size()), mean_sd(values(ix.losses(s, r->result.label))));
    }
  }
  // 2. Paired differences against each run's baseline, plan by plan.
  if (const std::optional<std::string> study_base = ix.baseline(); (study_base || !info.baseline_of.empty()) && deep.size() > 1) {
    md += fmt::format("\nDifference from the baseline (`{}` unless the study pairs a run with its own; model minus "
                      "baseline, same seed and cache size): mean with the 95% t interval over seeds, then the per-seed "
                      "differences. Negative: lower loss than the baseline.\n\n"
                      "| model | baseline | plan | kept | difference [95% interval] | per seed |\n|---|---|---|---|---|---|\n",
                      study_base ? *study_base : "-");
    for (const std::string& run : deep) {
      const std::optional<std::string> base = ix.baseline_for(run);
      if (!base) continue;
      for (const std::string& l : ix.labels(run)) {
        const StudyRow* r = ix.first(run, l);
        // Evenly spread plans compare at the same cache size (a CLA@k model snaps "retention 1" to its
        // leaders), greedy ones with the baseline's greedy set of that size.
        const std::optional<std::string> bl =
            r->result.strategy == "even" ? ix.even_plan_with(*base, r->result.kept.size())
            : ix.first(*base, l) != nullptr ? std::optional<std::string>(l)
                                            : std::nullopt;
        if (!bl) continue;
        const std::vector<double> d =
            paired(ix.losses(run, l), ix.losses(*base, *bl), [](double x, double y) { return x - y; });
        md += fmt::format("| {} | {} | {} | {} | {} | {} |\n", run, *base, l, r->result.kept.size(),
                          interval(mean_ci95(d)), per_seed(d));
      }
    }
  }
  // 2b. The full-retention gap of every routed run to its baseline, and how a regime moves it.
  {
    std::string table;
    bool any_reference = false;
    for (const std::string& run : deep) any_reference = any_reference || info.reference_of.count(run);
    auto gap = [&](const std::string& run) -> std::optional<std::pair<BySeed, BySeed>> {
      const std::optional<std::string> base = ix.baseline_for(run);
      if (!base) return std::nullopt;
      const size_t L = static_cast<size_t>(ix.first(run)->num_layers);
      const std::optional<std::string> rf = ix.even_plan_with(run, L), bf = ix.even_plan_with(*base, L);
      if (!rf || !bf) return std::nullopt;
      return std::make_pair(ix.losses(run, *rf), ix.losses(*base, *bf));
    };
    for (const std::string& run : deep) {
      if (ix.first(run)->policy == "none") continue;
      const auto g = gap(run);
      if (!g) continue;
      const auto& [r, b] = *g;
      const std::vector<double> d = paired(r, b, [](double x, double y) { return x - y; });
      const std::vector<double> rel = paired(r, b, [](double x, double y) { return (x - y) / y; });
      table += fmt::format("| {} | {} | {} | {} | {} | {} |", run, *ix.baseline_for(run), mean_sd(values(r)),
                           mean_sd(values(b)), interval(mean_ci95(d)), percent(mean_ci95(rel)));
      if (any_reference) {
        std::string moved = "-";
        if (auto ref = info.reference_of.find(run); ref != info.reference_of.end()) {
          if (const auto gr = gap(ref->second)) {
            // Per seed: (run - its baseline) - (reference - its baseline).
            std::vector<double> change;
            for (const auto& [seed, x] : r)
              if (b.count(seed) && gr->first.count(seed) && gr->second.count(seed))
                change.push_back((x - b.at(seed)) - (gr->first.at(seed) - gr->second.at(seed)));
            moved = fmt::format("{} (vs {})", interval(mean_ci95(change)), ref->second);
          }
        }
        table += " " + moved + " |";
      }
      table += "\n";
    }
    if (!table.empty()) {
      md += fmt::format("\nFull-retention gap: each routed model with its full cache against its baseline (same seed): "
                        "mean with the 95% t interval over seeds.{}\n\n"
                        "| model | baseline | loss | baseline loss | gap [95% interval] | relative [95% interval] |{}\n"
                        "|---|---|---|---|---|---|{}\n",
                        any_reference ? " Change: the gap minus the reference arm's gap (same seed); negative: the "
                                        "regime shrinks the gap." : "",
                        any_reference ? " change of the gap [95% interval] |" : "", any_reference ? "---|" : "");
      md += table;
    }
  }
  // 3. Equal cache: each deep model at a shallow baseline's cache size against that model.
  if (!shallow.empty()) {
    md += "\nSame cache size: each deep model with a shared cache minus the shallow full-cache model (same seed). "
          "Negative: the deep model is better.\n\n| cache | model | difference [95% interval] | per seed |\n"
          "|---|---|---|---|\n";
    for (const std::string& s : shallow) {
      const StudyRow* sr = ix.first(s);
      const size_t k = sr->result.kept.size();
      for (const std::string& run : deep) {
        const std::optional<std::string> plan = ix.even_plan_with(run, k);
        if (!plan) continue;
        const std::vector<double> d =
            paired(ix.losses(run, *plan), ix.losses(s, sr->result.label), [](double x, double y) { return x - y; });
        md += fmt::format("| {} ({:.0f}%) | {} | {} | {} |\n", layers_text(k), kv_percent(info, k), run,
                          interval(mean_ci95(d)), per_seed(d));
      }
    }
  }
  md += "\n![validation loss vs KV cache](plot.png)\n\n## The paper's claims at this scale\n\n"
        "Intervals in brackets are 95% Student-t intervals of the mean of the per-seed paired differences. A "
        "verdict needs the interval on one side of the threshold; otherwise, or with one seed, it is "
        "inconclusive.\n\n";
  for (const Claim& c : check_claims(info, rows))
    md += fmt::format("- **{}: {}.** {}\n", c.statement, verdict_name(c.verdict), c.evidence);
  return md;
}

std::string study_plot_data(const StudyInfo& info, const std::vector<StudyRow>& rows) {
  const Index ix{info, rows};
  std::string out;
  for (const std::string& run : ix.deep_runs()) {
    out += "\"" + run + "\"\n";
    // One point per cache size (evenly spread plans; CLA@k's snapped plans collapse to one size).
    std::set<size_t> done;
    for (const std::string& l : ix.labels(run)) {
      const StudyRow* r = ix.first(run, l);
      if (r->result.strategy != "even" || !done.insert(r->result.kept.size()).second) continue;
      const Summary s = summarize(values(ix.losses(run, l)));
      out += fmt::format("{:.4f} {:.6f} {:.6f}\n", 100.0 * static_cast<double>(r->result.kept.size()) / r->num_layers,
                         s.mean, s.sd);
    }
    out += "\n\n";
  }
  const std::vector<std::string> shallow = ix.shallow_runs();
  if (!shallow.empty()) {
    out += "\"shallow, full cache\"\n";
    for (const std::string& s : shallow) {
      const StudyRow* r = ix.first(s);
      const Summary v = summarize(values(ix.losses(s, r->result.label)));
      out += fmt::format("{:.4f} {:.6f} {:.6f}\n", kv_percent(info, r->result.kept.size()), v.mean, v.sd);
    }
    out += "\n\n";
  }
  return out;
}

std::string study_plot_script(const StudyInfo& info, const std::vector<StudyRow>& rows, const std::string& out_dir) {
  const Index ix{info, rows};
  const size_t blocks = ix.deep_runs().size() + (ix.shallow_runs().empty() ? 0 : 1);
  std::set<uint64_t> seeds;
  for (const StudyRow& r : rows) seeds.insert(r.seed);
  return fmt::format(
      "set terminal pngcairo size 960,640 font 'sans,11' noenhanced\nset output '{0}/plot.png'\n"
      "set title 'Validation loss vs KV cache ({1}; mean and sd over {2} seed{3})'\n"
      "set xlabel 'KV cache: layers keeping one (% of the model''s {4} layers unless paired otherwise)'\nset ylabel 'validation loss'\nset key outside right\n"
      "set grid\nset xrange [*:*] reverse\n"
      "plot for [i=0:{5}] '{0}/plot.dat' index i using 1:2:3 with yerrorlines lw 2 pt 7 title columnheader(1)\n",
      out_dir, info.name, seeds.size(), seeds.size() == 1 ? "" : "s", info.depth, blocks - 1);
}

// ---- Learning curves ----------------------------------------------------------------------------

std::vector<CurvePoint> curve_points_from_metrics(const std::string& text, const std::string& path,
                                                  const std::string& run, uint64_t seed, int64_t batch_tokens) {
  std::map<std::pair<int64_t, double>, CurvePoint> by_key;  // later lines win
  for_each_line(text, [&](const std::string& line, size_t line_no) {
    if (line.empty() || line.find("\"val_loss\"") == std::string::npos) return;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception&) {
      KV_FAIL("{}: line {}: not a JSON object", path, line_no);
    }
    KV_CHECK(j.is_object() && j.contains("step") && j["step"].is_number_integer() && j["val_loss"].is_object(),
             "{}: line {}: expected {{\"step\": N, \"val_loss\": {{...}}}}", path, line_no);
    const int64_t step = j["step"].get<int64_t>();
    for (const auto& [key, value] : j["val_loss"].items()) {
      double r = 0;
      try {
        r = std::stod(key);
      } catch (const std::exception&) {
        KV_FAIL("{}: line {}: retention '{}' is not a number", path, line_no, kvroute::excerpt(key, 40));
      }
      KV_CHECK(value.is_number() && std::isfinite(value.get<double>()), "{}: line {}: val_loss[{}] is not a finite "
               "number", path, line_no, key);
      by_key[{step, r}] = CurvePoint{run, seed, step, step * batch_tokens, r, value.get<double>()};
    }
  });
  std::vector<CurvePoint> out;
  for (auto& [key, p] : by_key) out.push_back(p);
  return out;
}

std::string curves_csv(const std::vector<CurvePoint>& points) {
  std::string csv = "run,seed,step,tokens,retention,val_loss\n";
  for (const CurvePoint& p : points)
    csv += fmt::format("{},{},{},{},{:g},{:.6f}\n", p.run, p.seed, p.step, p.tokens, p.retention, p.loss);
  return csv;
}

std::vector<CurvePoint> curves_from_csv(const std::string& text, const std::string& path) {
  static const std::string header = "run,seed,step,tokens,retention,val_loss";
  std::vector<CurvePoint> out;
  for_each_csv_row(text, path, header, "curves.csv", 6, [&](const std::vector<std::string>& f, size_t line_no) {
    auto number = [&](const std::string& s, const char* field) { return csv_number(s, path, line_no, field); };
    CurvePoint p;
    p.run = f[0];
    const double seed = number(f[1], "seed"), step = number(f[2], "step"), tokens = number(f[3], "tokens");
    KV_CHECK(seed >= 0 && step >= 0 && tokens >= 0 && seed <= 9e15 && step <= 9e15 && tokens <= 9e15,
             "{}: line {}: seed, step and tokens must be non-negative integers", path, line_no);
    p.seed = static_cast<uint64_t>(seed);
    p.step = static_cast<int64_t>(step);
    p.tokens = static_cast<int64_t>(tokens);
    p.retention = number(f[4], "retention");
    p.loss = number(f[5], "val_loss");
    out.push_back(p);
  });
  return out;
}

namespace {

// One curve comparison: a - b (relative: (a - b) / b) of two (run, retention) series, per seed.
struct CurveComparison {
  std::string title, a_run, b_run;
  double a_retention = 1.0, b_retention = 1.0;
  bool relative = false;
  double threshold = 0.0;  // where the fit's crossing is reported
};

std::vector<CurveComparison> curve_comparisons(const Index& ix) {
  std::vector<CurveComparison> out;
  const std::optional<std::string> base = ix.baseline();
  if (!base) return out;
  const int depth = ix.info.depth;
  std::vector<std::string> routed;
  for (const std::string& run : ix.deep_runs())
    if (ix.first(run)->policy != "none" && ix.first(run)->num_layers == depth && !ix.info.baseline_of.count(run))
      routed.push_back(run);
  for (const std::string& r : routed)
    out.push_back({fmt::format("{} gap", r), r, *base, 1.0, 1.0, true, 0.02});
  for (const std::string& s : ix.shallow_runs())
    out.push_back({fmt::format("{} - {}", *base, s), *base, s, 1.0, 1.0, false, 0.0});
  for (const std::string& r : routed) {
    for (const std::string& s : ix.shallow_runs()) {
      const double retention = static_cast<double>(ix.first(s)->num_layers) / depth;
      out.push_back({fmt::format("{}@{:g} - {}", r, retention, s), r, s, retention, 1.0, false, 0.0});
    }
  }
  return out;
}

// Per eval step of a comparison: tokens and the per-seed values.
std::map<int64_t, std::pair<int64_t, std::vector<double>>> comparison_series(const CurveComparison& c,
                                                                             const std::vector<CurvePoint>& points) {
  std::map<std::pair<int64_t, uint64_t>, double> a, b;  // (step, seed) -> loss
  std::map<int64_t, int64_t> tokens;
  for (const CurvePoint& p : points) {
    if (p.run == c.a_run && std::abs(p.retention - c.a_retention) < 1e-9) a[{p.step, p.seed}] = p.loss;
    if (p.run == c.b_run && std::abs(p.retention - c.b_retention) < 1e-9) b[{p.step, p.seed}] = p.loss;
    tokens[p.step] = p.tokens;
  }
  std::map<int64_t, std::pair<int64_t, std::vector<double>>> out;
  for (const auto& [key, x] : a) {
    auto it = b.find(key);
    if (it == b.end()) continue;
    auto& entry = out[key.first];
    entry.first = tokens[key.first];
    entry.second.push_back(c.relative ? (x - it->second) / it->second : x - it->second);
  }
  return out;
}

// Tokens the baseline's starting model (model.init_from) had seen before the study's runs (0 where
// unknown), and the points with them added: the curves' token axis counts a continued model's whole
// training.
int64_t tokens_before(const StudyInfo& info, const Index& ix) {
  const auto it = info.budget.find(ix.baseline().value_or(""));
  return it != info.budget.end() ? std::max<int64_t>(it->second.prior_tokens, 0) : 0;
}

std::vector<CurvePoint> counting_tokens_before(std::vector<CurvePoint> points, int64_t before) {
  for (CurvePoint& p : points) p.tokens += before;
  return points;
}

std::string curve_cell(const std::vector<double>& v, bool relative) {
  Interval ci = mean_ci95(v);
  if (relative) return percent(ci);
  return interval(ci);
}

}  // namespace

bool curves_drawn(const std::vector<CurvePoint>& points) {
  std::map<std::pair<std::string, uint64_t>, std::set<int64_t>> steps;
  std::set<std::string> runs;
  bool a_curve = false;
  for (const CurvePoint& p : points) {
    auto& s = steps[{p.run, p.seed}];
    s.insert(p.step);
    a_curve = a_curve || s.size() >= 2;
    runs.insert(p.run);
  }
  return a_curve && runs.size() >= 2;  // the curves compare runs: one alone has nothing to show
}

std::string curves_markdown(const StudyInfo& info, const std::vector<StudyRow>& rows,
                            const std::vector<CurvePoint>& measured) {
  if (!curves_drawn(measured)) return "";
  const Index ix{info, rows};
  const int64_t before = tokens_before(info, ix);
  const std::vector<CurvePoint> points = counting_tokens_before(measured, before);
  const std::vector<CurveComparison> comparisons = curve_comparisons(ix);
  std::string md = "\n## Learning curves (in-training evaluation)\n\n";
  if (comparisons.empty()) return md + "No baseline measured yet: nothing to compare.\n";
  md += "At every in-training evaluation: the full-retention gap of each routed model (relative to the baseline, "
        "same seed), the deep baseline minus each shallow full-cache model (negative: depth pays), and each routed "
        "model at the shallow model's cache minus that model (negative: the shared cache beats the shallower "
        "model). Mean over seeds with the 95% t interval of the per-seed differences.\n\n";
  if (before > 0)
    md += fmt::format("Tokens count the {:.3g}M that the starting model (model.init_from) saw in the run that wrote "
                      "it.\n\n", before / 1e6);
  std::map<int64_t, int64_t> steps;  // step -> tokens
  for (const CurvePoint& p : points) steps[p.step] = p.tokens;
  const auto budget = info.budget.find(ix.baseline().value_or(""));  // the baseline's parameters
  const double params = budget != info.budget.end() ? static_cast<double>(budget->second.parameters) : 0.0;
  md += "| tokens | tokens/param |";
  for (const CurveComparison& c : comparisons) md += fmt::format(" {} |", c.title);
  md += "\n|---|---|";
  for (size_t i = 0; i < comparisons.size(); ++i) md += "---|";
  md += "\n";
  std::vector<std::map<int64_t, std::pair<int64_t, std::vector<double>>>> series;
  for (const CurveComparison& c : comparisons) series.push_back(comparison_series(c, points));
  for (const auto& [step, tokens] : steps) {
    md += fmt::format("| {:.2f}M | {} |", static_cast<double>(tokens) / 1e6,
                      params > 0 ? fmt::format("{:.2f}", static_cast<double>(tokens) / params) : std::string("-"));
    for (size_t i = 0; i < comparisons.size(); ++i) {
      auto it = series[i].find(step);
      const std::string cell = it == series[i].end() ? "-" : curve_cell(it->second.second, comparisons[i].relative);
      md += fmt::format(" {} |", cell);
    }
    md += "\n";
  }
  if (params > 0) {
    md += "\nWhere each claim holds along training: the first evaluation from which the seed mean (and the upper end "
          "of its 95% interval) stays below the threshold at every later evaluation (2% for a gap, 0 for a "
          "difference); a mean averages the seeds evaluated at that point. Where the last evaluation is not yet "
          "below, a least-squares line through the upper half of the measured log10(tokens per parameter) range (at "
          "least 3 points) says where it would reach the threshold, forward of the last evaluation: an "
          "extrapolation, marked as one.\n\n"
          "| comparison | at the last point | mean below from (tokens/param) | interval below from | tail fit points | "
          "slope per decade | tail line reaches the threshold at |\n|---|---|---|---|---|---|---|\n";
    auto tokens_per_param = [](double v) {
      const double shown = std::stod(fmt::format("{:.3g}", v));  // 999.7 is shown as 1000, not 1e+03
      return shown >= 1000 && shown < 1e5 ? fmt::format("{:.0f}", shown) : fmt::format("{:.3g}", shown);
    };
    for (size_t i = 0; i < comparisons.size(); ++i) {
      std::vector<double> xs, means;
      std::vector<Interval> cis;
      for (const auto& [step, entry] : series[i]) {
        if (entry.first <= 0 || entry.second.empty()) continue;
        xs.push_back(std::log10(static_cast<double>(entry.first) / params));
        cis.push_back(mean_ci95(entry.second));
        means.push_back(cis.back().mean);
      }
      const CurveComparison& c = comparisons[i];
      auto show = [&](double y) { return c.relative ? fmt::format("{:+.2f}%", 100 * y) : fmt::format("{:+.4f}", y); };
      if (xs.size() < 3) {
        md += fmt::format("| {} | {} | - | - | {} | - | (fewer than 3 points) |\n", c.title,
                          xs.empty() ? std::string("-") : show(means.back()), xs.size());
        continue;
      }
      // The first evaluation from which every later value is below the threshold (an evaluation
      // without a value, e.g. one seed where an interval is asked for, ends the run of them).
      auto below_from = [&](auto below) {
        size_t k = xs.size();
        while (k > 0 && below(k - 1)) --k;
        return k == xs.size() ? std::string("not at the last point") : tokens_per_param(std::pow(10.0, xs[k]));
      };
      const std::string mean_from = below_from([&](size_t k) { return means[k] < c.threshold; });
      const std::string ci_from =
          cis.back().defined ? below_from([&](size_t k) { return cis[k].defined && cis[k].hi < c.threshold; })
                             : "(one seed)";
      // The tail: the upper half of the log range, or the last 3 points if that holds fewer.
      const double mid = 0.5 * (xs.front() + xs.back());
      size_t first = 0;
      while (first < xs.size() && xs[first] < mid) ++first;
      first = std::min(first, xs.size() - 3);
      const size_t n = xs.size() - first;
      double mx = 0, my = 0;
      for (size_t k = first; k < xs.size(); ++k) mx += xs[k], my += means[k];
      mx /= static_cast<double>(n);
      my /= static_cast<double>(n);
      double sxx = 0, sxy = 0;
      for (size_t k = first; k < xs.size(); ++k) sxx += (xs[k] - mx) * (xs[k] - mx), sxy += (xs[k] - mx) * (means[k] - my);
      const double slope = sxx > 0 ? sxy / sxx : 0.0, intercept = my - slope * mx;
      std::string reach;
      if (means.back() < c.threshold) {
        reach = "- (below at the last point)";
      } else if (slope < 0) {
        // Forward only: a line already below at the last evaluation (where the mean is not) says nothing.
        const double x = (c.threshold - intercept) / slope;
        reach = x > xs.back() ? fmt::format("{} (extrapolated)", tokens_per_param(std::pow(10.0, x)))
                              : std::string("- (the tail line is below at the last point, the mean is not)");
      } else {
        reach = "does not reach it (the tail does not fall)";
      }
      md += fmt::format("| {} | {} | {} | {} | {} | {} | {} |\n", c.title, show(means.back()), mean_from, ci_from, n,
                        show(slope), reach);
    }
  }
  md += "\n![differences vs tokens](curves.png)\n";
  return md;
}

std::string curves_plot_data(const StudyInfo& info, const std::vector<StudyRow>& rows,
                             const std::vector<CurvePoint>& measured) {
  const Index ix{info, rows};
  const std::vector<CurvePoint> points = counting_tokens_before(measured, tokens_before(info, ix));
  std::string rel, diff;
  for (const CurveComparison& c : curve_comparisons(ix)) {
    std::string block = "\"" + c.title + "\"\n";
    for (const auto& [step, entry] : comparison_series(c, points)) {
      const Summary s = summarize(entry.second);
      const double k = c.relative ? 100.0 : 1.0;
      block += fmt::format("{:.4f} {:.6f} {:.6f}\n", static_cast<double>(entry.first) / 1e6, k * s.mean, k * s.sd);
    }
    (c.relative ? rel : diff) += block + "\n\n";
  }
  // Relative gaps first, then differences; the script counts the blocks of each.
  return rel + diff;
}

std::string curves_plot_script(const StudyInfo& info, const std::string& out_dir) {
  return fmt::format(
      "set terminal pngcairo size 1100,900 font 'sans,11' noenhanced\nset output '{0}/curves.png'\n"
      "blocks = system(\"grep -c '^\\\"' '{0}/curves.dat'\") + 0\n"  // one title line per series
      "rel = system(\"grep -c ' gap\\\"$' '{0}/curves.dat'\") + 0\n"
      "set multiplot layout 2,1 title '{1}: differences against tokens seen (mean and sd over seeds)'\n"
      "set grid\nset key outside right\nset xlabel 'training tokens (M)'\nset logscale x\n"
      // The same plot area in both panels whatever their keys' widths, so their x axes line up.
      "set lmargin at screen 0.08\nset rmargin at screen 0.70\n"
      // Each panel only where it has series (a study without shallow models has no differences).
      "set ylabel 'loss relative to the baseline (%)'\n"
      "if (rel > 0) {{\n"
      "plot for [i=0:rel-1] '{0}/curves.dat' index i using 1:2:3 with yerrorlines lw 2 pt 7 title columnheader(1), "
      "2 with lines lc rgb 'gray' dt 2 title '2% (the paper)'\n"
      "}}\n"
      "set ylabel 'loss difference (nats)'\n"
      "if (blocks > rel) {{\n"
      "plot for [i=rel:blocks-1] '{0}/curves.dat' index i using 1:2:3 with yerrorlines lw 2 pt 7 title columnheader(1), "
      "0 with lines lc rgb 'gray' notitle\n}}\nunset multiplot\n",
      out_dir, info.name);
}

}  // namespace kvroute::eval
