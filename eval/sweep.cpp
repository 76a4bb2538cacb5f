#include "eval/sweep.h"

#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>
#include <algorithm>
#include <cmath>
#include <cctype>
#include <map>
#include <optional>
#include <set>
#include <nlohmann/json.hpp>

#include "core/text.h"
#include "core/io.h"
#include "core/json.h"
#include "layers/transformer.h"
#include "eval/evaluate.h"
#include "kernels/ops.h"
#include "eval/study_report.h"
#include "layers/inference_plan.h"
#include "train/checkpoint.h"
#include "train/execution.h"
#include "train/init_from.h"
#include "train/trainer.h"
#include "train/yaml_schema.h"

namespace kvroute::eval {

namespace fs = std::filesystem;

namespace {

// A list of section.key=value overrides.
std::vector<std::string> string_list(const YAML::Node& n, const std::string& where) {
  KV_CHECK(n.IsSequence(), "{}: expected a list of section.key=value strings, got '{}'", where, train::excerpt(n));
  std::vector<std::string> out;
  for (const auto& item : n) out.push_back(train::read_as<std::string>(item, where, "a section.key=value string"));
  return out;
}

template <class C>
train::Field<C> overrides_field(std::string key, std::vector<std::string>& (*ref)(C&)) {
  return {key, [ref](C& c, const YAML::Node& n, const std::string& where) { ref(c) = string_list(n, where); }, {}};
}

#define STUDY_REF(type, expr) +[](Study& s) -> type& { return expr; }
#define RUN_REF(type, expr) +[](StudyRun& r) -> type& { return expr; }

// The keys of a run of `runs:`.
const std::vector<train::Field<StudyRun>>& run_schema() {
  static const std::vector<train::Field<StudyRun>> fields = {
      train::string_field("name", RUN_REF(std::string, r.name)),
      overrides_field("overrides", RUN_REF(std::vector<std::string>, r.overrides)),
      train::string_field("baseline", RUN_REF(std::string, r.baseline)),
      train::string_field("reference", RUN_REF(std::string, r.reference)),
  };
  return fields;
}

// The keys of the study's `eval:` mapping.
const std::vector<train::Field<Study>>& eval_schema() {
  static const std::vector<train::Field<Study>> fields = {
      {"retention",
       [](Study& s, const YAML::Node& n, const std::string& where) {
         KV_CHECK(n.IsSequence() && n.size() > 0 && n.size() <= 4096,
                  "{}: expected a list of 1 to 4096 retention fractions, got '{}'", where, train::excerpt(n));
         s.retention.clear();
         for (const auto& v : n) {
           const double r = train::read_as<double>(v, where, "a number");
           KV_CHECK(r > 0 && r <= 1, "{}: {} is out of range (0, 1]", where, r);
           s.retention.push_back(r);
         }
       },
       {}},
      train::int_field("batches", STUDY_REF(int64_t, s.eval_batches), 0, int64_t{1} << 40),
      train::string_field("strategy", STUDY_REF(std::string, s.strategy),
                          +[](const std::string& v, const std::string& where) {
                            KV_CHECK(v == "even" || v == "greedy", "{}: '{}' is not one of even, greedy", where,
                                     kvroute::excerpt(v, 40));
                          }),
      train::float_field("plan_split", STUDY_REF(double, s.plan_split), 0, 0.999999),
  };
  return fields;
}

// The keys of a study file.
const std::vector<train::Field<Study>>& study_schema() {
  static const std::vector<train::Field<Study>> fields = {
      train::string_field("study", STUDY_REF(std::string, s.name),
                          +[](const std::string& v, const std::string& where) {
                            KV_CHECK(!v.empty(), "{}: must not be empty", where);
                          }),
      train::string_field("base", STUDY_REF(std::string, s.base_config)),
      train::string_field("out", STUDY_REF(std::string, s.out_dir)),
      overrides_field("overrides", STUDY_REF(std::vector<std::string>, s.overrides)),
      {"runs",
       [](Study& s, const YAML::Node& n, const std::string& where) {
         KV_CHECK(n.IsSequence(), "{}: expected a list of {{name, overrides, baseline, reference}}, got '{}'", where,
                  train::excerpt(n));
         std::vector<StudyRun> runs;
         for (size_t i = 0; i < n.size(); ++i) {
           StudyRun run;
           const std::string path = fmt::format("runs[{}]", i);
           train::read_keys(n[i], run_schema(), run, s.source, path);
           KV_CHECK(n[i]["name"], "{}: {}: every run needs a name", s.source, path);
           runs.push_back(run);
         }
         s.runs.insert(s.runs.begin(), runs.begin(), runs.end());  // before a grid's, wherever that is given
       },
       {}},
      {"grid",
       [](Study& s, const YAML::Node& n, const std::string& where) {  // the product of section.key: [values]
         KV_CHECK(n.IsMap(), "{}: expected a mapping of section.key to a list of values", where);
         std::vector<StudyRun> grid(1);
         for (const auto& kv : n) {
           const std::string key = train::read_as<std::string>(kv.first, where, "a section.key");
           KV_CHECK(kv.second.IsSequence(), "{}.{}: expected a list of values", where, kvroute::excerpt(key, 60));
           std::vector<StudyRun> next;
           for (const StudyRun& base : grid) {
             for (const auto& v : kv.second) {
               StudyRun r = base;
               const std::string short_key = key.substr(key.find('.') + 1);
               r.name += (r.name.empty() ? "" : "_") + short_key + "-" + train::yaml_text(v);
               r.overrides.push_back(key + "=" + train::yaml_text(v));
               next.push_back(r);
             }
           }
           grid = next;
         }
         s.runs.insert(s.runs.end(), grid.begin(), grid.end());
       },
       {}},
      {"seeds",
       [](Study& s, const YAML::Node& n, const std::string& where) {
         KV_CHECK(n.IsSequence() && n.size() > 0, "{}: expected a non-empty list of integers", where);
         for (const auto& v : n) {
           const std::string text = train::read_as<std::string>(v, where, "a non-negative integer");
           KV_CHECK(!text.empty() && text.size() <= 19 && std::all_of(text.begin(), text.end(), ::isdigit),
                    "{}: '{}' is not a non-negative integer", where, kvroute::excerpt(text, 40));
           const uint64_t seed = std::stoull(text);
           KV_CHECK(std::find(s.seeds.begin(), s.seeds.end(), seed) == s.seeds.end(), "{}: seed {} appears twice",
                    where, seed);
           s.seeds.push_back(seed);
         }
       },
       {}},
      train::bool_field("shallow_baselines", STUDY_REF(bool, s.shallow_baselines)),
      {"eval",
       [](Study& s, const YAML::Node& n, const std::string&) { train::read_keys(n, eval_schema(), s, s.source, "eval"); },
       {}},
  };
  return fields;
}

#undef STUDY_REF
#undef RUN_REF

}  // namespace

namespace {

Study read_study(const std::string& path) {
  const YAML::Node root = train::load_yaml(io::read_file(path, 16 << 20), path);
  KV_CHECK(root.IsMap(), "{}: expected a mapping (study, base, overrides, runs | grid, seeds, shallow_baselines, eval)",
           path);
  Study s;
  s.source = path;
  std::set<std::string> given;
  // The same schema machinery and error format as run configs ("FILE: key: ..."), at the top level.
  for (const auto& kv : root) {
    KV_CHECK(kv.first.IsScalar(), "{}: a key must be a plain word, got '{}'", path, train::excerpt(kv.first));
    const std::string key = kv.first.as<std::string>();
    KV_CHECK(given.insert(key).second, "{}: key '{}' appears twice", path, kvroute::excerpt(key, 60));
    const auto& fields = study_schema();
    auto field = std::find_if(fields.begin(), fields.end(), [&](const auto& f) { return f.key == key; });
    std::vector<std::string> keys;
    for (const auto& f : fields) keys.push_back(f.key);
    KV_CHECK(field != fields.end(), "{}: unknown key '{}' (did you mean '{}'?; expected {})", path,
             kvroute::excerpt(key, 60), train::nearest(key, keys), fmt::join(keys, ", "));
    field->read(s, kv.second, fmt::format("{}: {}", path, key));
  }
  KV_CHECK(given.count("study") && given.count("base"), "{}: 'study' (a name) and 'base' (a run config) are required",
           path);
  if (!given.count("out")) s.out_dir = (fs::path(path).parent_path() / s.name).string();
  KV_CHECK(s.plan_split == 0 || s.strategy == "greedy",
           "{}: eval.plan_split {} needs eval.strategy: greedy (only the greedy planner chooses on data)", path,
           s.plan_split);
  KV_CHECK(!s.runs.empty(), "{}: no runs (give 'runs' or 'grid')", path);
  std::set<std::string> names;
  for (const StudyRun& r : s.runs) {
    KV_CHECK(!r.name.empty() && r.name.size() <= 100 &&
                 std::all_of(r.name.begin(), r.name.end(),
                             [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'; }) &&
                 r.name[0] != '.',
             "{}: run name '{}' must be 1-100 letters, digits, '-', '_' or '.' (it names a directory)", path,
             kvroute::excerpt(r.name, 100));
    KV_CHECK(names.insert(r.name).second, "{}: run name '{}' appears twice", path, r.name);
  }
  // Explicit pairs: a run's baseline is a run without routing of its own depth; its reference is a
  // run with a baseline of its own (explicit or the study's). Paired runs keep their own depth.
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < s.runs.size(); ++i) index[s.runs[i].name] = i;
  std::set<std::string> paired;
  for (const StudyRun& r : s.runs) {
    for (const std::string* other : {&r.baseline, &r.reference}) {
      if (other->empty()) continue;
      const char* what = other == &r.baseline ? "baseline" : "reference";
      KV_CHECK(index.count(*other), "{}: run '{}': {} '{}' is not a run of the study", path, r.name, what,
               kvroute::excerpt(*other, 100));
      KV_CHECK(*other != r.name, "{}: run '{}': {} names the run itself", path, r.name, what);
    }
    if (!r.baseline.empty()) {
      paired.insert(r.name);
      paired.insert(r.baseline);
      KV_CHECK(s.runs[index[r.baseline]].baseline.empty(), "{}: run '{}': baseline '{}' has a baseline of its own",
               path, r.name, r.baseline);
    }
  }
  // Validate every run's config now, so a typo fails before hours of training. The deepest unpaired
  // runs set the study's depth, which cache fractions are relative to; an unpaired run of fewer
  // layers is an equal-cache baseline (full cache, no routing), as are those shallow_baselines adds.
  std::vector<int> depths;
  for (const StudyRun& r : s.runs) {
    std::vector<std::string> all = s.overrides;
    all.insert(all.end(), r.overrides.begin(), r.overrides.end());
    train::RunConfig c;
    try {
      c = train::load_run_config(s.base_config, all);
    } catch (const Error& e) {
      KV_FAIL("{}: run '{}': {}", path, r.name, e.what());
    }
    depths.push_back(static_cast<int>(c.model.num_layers));
    if (!paired.count(r.name) || paired.size() == s.runs.size()) s.depth = std::max(s.depth, depths.back());
    if (c.router.config.policy != layers::RouterConfig::Policy::None) depths.back() = -depths.back();
  }
  for (const StudyRun& r : s.runs) {
    if (r.baseline.empty()) continue;
    const size_t b = index[r.baseline];
    KV_CHECK(depths[b] > 0, "{}: run '{}': baseline '{}' has routing (a baseline needs router.policy=none)", path,
             r.name, r.baseline);
    KV_CHECK(std::abs(depths[index[r.name]]) == depths[b], "{}: run '{}' has {} layers but its baseline '{}' has {}",
             path, r.name, std::abs(depths[index[r.name]]), r.baseline, depths[b]);
  }
  for (size_t i = 0; i < s.runs.size(); ++i) {
    const int L = std::abs(depths[i]);
    if (L == s.depth || paired.count(s.runs[i].name)) continue;
    KV_CHECK(depths[i] > 0, "{}: run '{}' has {} layers, fewer than the study's {}: a shallower run is an equal-cache "
             "baseline and needs router.policy=none", path, s.runs[i].name, L, s.depth);
    s.runs[i].shallow = true;
  }
  // Two retention levels giving the same keep-set would be two columns of one plan.
  std::map<size_t, double> sizes;
  for (double r : s.retention) {
    const size_t k = layers::keep_retention(s.depth, r).size();
    KV_CHECK(!sizes.count(k), "{}: eval.retention {:g} and {:g} both keep {} of the {} layers (the same plan twice)",
             path, sizes[k], r, k, s.depth);
    sizes[k] = r;
  }
  if (s.shallow_baselines) {
    KV_CHECK(sizes.begin()->first < static_cast<size_t>(s.depth), "{}: shallow_baselines: every eval.retention "
             "keeps all {} layers, so there is no smaller cache to compare with", path, s.depth);
    std::vector<StudyRun> shallow;
    for (auto it = sizes.rbegin(); it != sizes.rend(); ++it) {
      if (it->first == static_cast<size_t>(s.depth)) continue;
      if (std::find(depths.begin(), depths.end(), static_cast<int>(it->first)) != depths.end()) continue;  // given
      StudyRun r;
      r.name = fmt::format("shallow-{}L", it->first);
      r.overrides = {fmt::format("model.num_layers={}", it->first), "router.policy=none"};
      r.shallow = true;
      KV_CHECK(names.insert(r.name).second, "{}: run name '{}' is taken by shallow_baselines", path, r.name);
      std::vector<std::string> all = s.overrides;
      all.insert(all.end(), r.overrides.begin(), r.overrides.end());
      try {
        (void)train::load_run_config(s.base_config, all);
      } catch (const Error& e) {
        KV_FAIL("{}: shallow baseline '{}': {}", path, r.name, e.what());
      }
      shallow.push_back(r);
    }
    s.runs.insert(s.runs.end(), shallow.begin(), shallow.end());
  }
  return s;
}

}  // namespace

Study load_study(const std::string& path) {
  try {
    return read_study(path);
  } catch (const YAML::Exception& e) {  // a value of the wrong shape (a list where a name belongs, ...)
    KV_FAIL("{}: {}", path, e.msg);
  }
}

namespace {

// The evaluation settings a replicate's eval.json was made with (study_eval.json beside it): a
// changed study re-evaluates instead of reporting stale plans.
std::string eval_settings(const Study& study, const StudyRun& run, const train::RunConfig& config) {
  nlohmann::ordered_json j{{"retention", study.retention}, {"batches", study.eval_batches},
                           {"strategy", run.shallow ? "even" : study.strategy}, {"plan_split", study.plan_split}, {"split", "interleaved"},
                           {"shallow", run.shallow}};
  if (config.train.precision != train::Precision::FP32) j["precision"] = train::precision_name(config.train.precision);
  return j.dump() + "\n";
}

std::vector<PlanResult> read_eval_json(const std::string& path) {
  const json::Json doc = json::parse_file(path);
  KV_CHECK(doc.is_array(), "{}: not an eval.json of kvroute eval (expected a list of plans); delete it to evaluate "
           "again", path);
  std::vector<PlanResult> out;
  for (size_t i = 0; i < doc.size(); ++i) {
    const json::Json& j = doc[i];
    const std::string what = fmt::format("{}: plan {}", path, i);
    KV_CHECK(j.is_object(), "{}: expected an object, got {}", what, json::excerpt(j));
    PlanResult p;
    p.label = json::get_string(j, "plan", what);
    p.strategy = json::get_string(j, "strategy", what);
    KV_CHECK(j.contains("kept") && j["kept"].is_array(), "{}: \"kept\" must be a list of layers", what);
    for (const json::Json& l : j["kept"]) {
      KV_CHECK(l.is_number_integer() && l.get<int64_t>() >= 0 && l.get<int64_t>() < 4096,
               "{}: \"kept\" holds {}, not a layer index", what, json::excerpt(l));
      p.kept.push_back(static_cast<int>(l.get<int64_t>()));
    }
    p.loss = json::get_number(j, "val_loss", what, 0, 1e6);
    p.perplexity = std::exp(p.loss);  // as written (eval/evaluate.cpp), and never null
    p.tokens = json::get_int(j, "tokens", what, 0, INT64_MAX);
    out.push_back(p);
  }
  return out;
}

// The plans a replicate is measured under: every retention level (evenly spread keep-sets; a CLA@k
// model snaps them to its group leaders), the keep-set its groups imply when no level gives it,
// and with strategy greedy the greedy sets of the same sizes. A shallow baseline: its full cache.
std::vector<PlanResult> evaluate_replicate(const Study& study, const StudyRun& run, const train::RunConfig& config,
                                           const layers::Transformer& model, dist::Communicator& comm) {
  PlanRequest request;
  request.plan_split = study.plan_split;  // every model, shallow baselines included, reports on the same part
  if (run.shallow) {
    request.retention = {1.0};
  } else {
    request.retention = study.retention;
    const auto policy = config.router.config.policy;
    if (policy == layers::RouterConfig::Policy::FixedGroups || policy == layers::RouterConfig::Policy::RandomFixedGroups)
      request.implied_groups = config.router.config.group_size;
    request.greedy = study.strategy == "greedy";
  }
  return evaluate_plans(model, config.data.dir, config.train.seq_len, config.train.batch_size, study.eval_batches,
                        request, comm);
}

}  // namespace

namespace {

// results.csv, report.md, plot.dat/plot.gp and plot.png from the rows measured so far; with
// in-training evaluations also curves.csv and curves.png.
void write_report(const Study& study, const StudyInfo& info, const std::vector<StudyRow>& rows,
                  const std::vector<CurvePoint>& curves, bool print) {
  fs::create_directories(study.out_dir);
  io::write_file_atomic(study.out_dir + "/results.csv", study_csv(info, rows));
  const std::string md = study_markdown(info, rows) + curves_markdown(info, rows, curves);
  io::write_file_atomic(study.out_dir + "/report.md", md);
  auto plot = [&](const std::string& name, const std::string& data, const std::string& script_text) {
    io::write_file_atomic(study.out_dir + "/" + name + ".dat", data);
    const std::string script = study.out_dir + "/" + name + ".gp";
    io::write_file_atomic(script, script_text);
    if (std::system(fmt::format("gnuplot '{}' 2> '{}/{}.log'", script, study.out_dir, name).c_str()) != 0) {
      std::printf("sweep: gnuplot failed (see %s/%s.log); results.csv and report.md are complete\n",
                  study.out_dir.c_str(), name.c_str());
    }
  };
  plot("plot", study_plot_data(info, rows), study_plot_script(info, rows, study.out_dir));
  if (!curves.empty()) io::write_file_atomic(study.out_dir + "/curves.csv", curves_csv(curves));  // what resumes read
  if (curves_drawn(curves)) {
    plot("curves", curves_plot_data(info, rows, curves), curves_plot_script(info, study.out_dir));
  }
  if (print) std::printf("\n%s", md.c_str());
}

// Tokens per optimizer step of a run.
int64_t batch_tokens(const train::RunConfig& config, int world_size) {
  return config.train.global_batch_tokens > 0 ? config.train.global_batch_tokens
                                              : world_size * config.train.batch_size * config.train.seq_len;
}

// The study's recorded in-training evaluations (curves.csv), if any.
std::vector<CurvePoint> recorded_curves(const Study& study) {
  const std::string path = study.out_dir + "/curves.csv";
  if (!fs::exists(path)) return {};
  return curves_from_csv(io::read_file(path, 256 << 20), path);
}

// A replicate's in-training evaluations from its metrics.jsonl replace what curves.csv held for it.
void update_curves(std::vector<CurvePoint>& curves, const std::string& run_dir, const std::string& run, uint64_t seed,
                   const train::RunConfig& config, int world_size) {
  const std::string path = run_dir + "/metrics.jsonl";
  if (!fs::exists(path)) return;
  std::vector<CurvePoint> fresh =
      curve_points_from_metrics(io::read_file(path, 1 << 30), path, run, seed, batch_tokens(config, world_size));
  std::erase_if(curves, [&](const CurvePoint& p) { return p.run == run && p.seed == seed; });
  curves.insert(curves.end(), fresh.begin(), fresh.end());
}

// What a run trains on: tokens over all steps, and its model's parameters (counted from the config: nothing is
// allocated); a run that starts from a kvroute checkpoint adds the tokens that checkpoint's run had seen.
Budget run_budget(const train::RunConfig& config, int world_size) {
  Budget b{config.train.steps * batch_tokens(config, world_size), config.model_config().parameter_count(), 0};
  const std::string& from = config.init_from;
  if (!from.empty()) b.prior_tokens = fs::exists(from + "/state.json") ? train::read_train_state(from).tokens_seen : -1;
  return b;
}

// The run's config as the study trains it (seed and run directory included).
train::RunConfig replicate_config(const Study& study, const StudyRun& r, const std::optional<uint64_t>& seed,
                                  std::string* run_dir) {
  std::vector<std::string> all = study.overrides;
  all.insert(all.end(), r.overrides.begin(), r.overrides.end());
  *run_dir = study.out_dir + "/runs/" + r.name;
  std::string name = r.name;
  if (seed) {
    all.push_back(fmt::format("train.seed={}", *seed));
    all.push_back(fmt::format("router.seed={}", *seed));
    *run_dir += fmt::format("/seed-{}", *seed);
    name += fmt::format("-s{}", *seed);
  }
  all.push_back("train.run_dir=" + *run_dir);
  all.push_back("train.name=" + name);
  return train::load_run_config(study.base_config, all);
}

// What the report needs to know of the study (budgets are added as runs are known).
StudyInfo study_info(const Study& study) {
  StudyInfo info;
  info.name = study.name;
  info.base_config = study.base_config;
  info.source = study.source;
  info.depth = study.depth;
  info.plan_split = study.plan_split;
  for (const StudyRun& r : study.runs) {
    info.runs.push_back(r.name);
    if (!r.baseline.empty()) info.baseline_of[r.name] = r.baseline;
    if (!r.reference.empty()) info.reference_of[r.name] = r.reference;
  }
  return info;
}

}  // namespace

void report_study(const Study& study) {
  const std::string csv = study.out_dir + "/results.csv";
  StudyInfo info = study_info(study);
  const std::vector<StudyRow> rows = study_rows_from_csv(io::read_file(csv, 256 << 20), csv);
  std::string run_dir;
  for (const StudyRun& r : study.runs) {
    if (std::none_of(rows.begin(), rows.end(), [&](const StudyRow& row) { return row.run == r.name; })) continue;
    const std::optional<uint64_t> seed = study.seeds.empty() ? std::nullopt : std::optional<uint64_t>(study.seeds[0]);
    info.budget[r.name] = run_budget(replicate_config(study, r, seed, &run_dir), 1);
  }
  write_report(study, info, rows, recorded_curves(study), true);
}

namespace {

// The rows a replicate left in an earlier results.csv, when they cover every plan this study
// measures (its retention levels; greedy sets with strategy greedy) and the model is the same kind.
std::vector<StudyRow> recorded_rows(const std::vector<StudyRow>& recorded, const Study& study, const StudyRun& run,
                                    uint64_t seed, const train::RunConfig& config) {
  std::vector<StudyRow> out;
  for (const StudyRow& row : recorded)
    if (row.run == run.name && row.seed == seed) out.push_back(row);
  const std::vector<double> levels = run.shallow ? std::vector<double>{1.0} : study.retention;
  for (double r : levels) {
    const std::string label = fmt::format("retention {:g}", r);
    if (std::none_of(out.begin(), out.end(), [&](const StudyRow& row) { return row.result.label == label; })) return {};
  }
  if (!run.shallow && study.strategy == "greedy" &&
      std::none_of(out.begin(), out.end(), [](const StudyRow& row) { return row.result.strategy == "greedy"; }))
    return {};
  for (const StudyRow& row : out)
    if (row.num_layers != config.model.num_layers || row.policy != layers::policy_name(config.router.config.policy))
      return {};
  return out;
}

}  // namespace

bool run_study(const Study& study, dist::Communicator& comm) {
  const bool leader = comm.rank() == 0;
  std::vector<StudyRow> rows;
  StudyInfo info = study_info(study);
  // Replicates whose run directories are gone (a study carried over to another machine) but whose
  // results were committed: taken from results.csv instead of being trained again.
  std::vector<StudyRow> recorded;
  const std::string csv_path = study.out_dir + "/results.csv";
  if (fs::exists(csv_path)) {
    try {
      recorded = study_rows_from_csv(io::read_file(csv_path, 256 << 20), csv_path);
    } catch (const Error& e) {
      if (leader) std::printf("sweep: note: %s; every replicate without a run directory is trained\n", e.what());
    }
  }
  std::vector<CurvePoint> curves;
  try {
    curves = recorded_curves(study);
  } catch (const Error& e) {
    if (leader) std::printf("sweep: note: %s; the curves are rebuilt from the run directories\n", e.what());
  }
  const std::vector<std::optional<uint64_t>> seeds =
      study.seeds.empty() ? std::vector<std::optional<uint64_t>>{std::nullopt}
                          : std::vector<std::optional<uint64_t>>(study.seeds.begin(), study.seeds.end());
  for (const std::optional<uint64_t>& seed : seeds) {  // seed-major: a partial study has every model
    for (const StudyRun& r : study.runs) {
      std::string run_dir;
      train::RunConfig config = replicate_config(study, r, seed, &run_dir);
      const std::string name = config.train.name;
      const std::string final_ckpt = train::checkpoint_path(config.checkpoints_dir(), config.train.steps);
      const uint64_t row_seed = seed ? *seed : config.train.seed;
      if (!fs::exists(run_dir)) {
        std::vector<StudyRow> kept = recorded_rows(recorded, study, r, row_seed, config);
        if (!kept.empty()) {
          if (leader) std::printf("sweep: %s recorded in %s (no run directory): not trained again\n", name.c_str(),
                                  csv_path.c_str());
          rows.insert(rows.end(), kept.begin(), kept.end());
          if (leader && !info.budget.count(r.name)) info.budget[r.name] = run_budget(config, comm.world_size());
          continue;
        }
      }
      if (fs::exists(final_ckpt + "/model.safetensors")) {
        if (leader) std::printf("sweep: %s already trained (%s)\n", name.c_str(), final_ckpt.c_str());
      } else {
        if (leader) std::printf("sweep: training %s\n", name.c_str());
        std::fflush(stdout);
        const train::TrainResult trained = train::run_training(config, comm, {"auto", 0, false});
        if (trained.interrupted) {  // stop here: nothing is evaluated or reported from a partial run
          if (leader) std::printf("sweep: interrupted while training %s; run the same command to resume\n", name.c_str());
          return false;
        }
      }
      const std::string eval_path = run_dir + "/eval.json", settings_path = run_dir + "/study_eval.json";
      const std::string settings = eval_settings(study, r, config);
      std::vector<PlanResult> results;
      if (fs::exists(eval_path) && fs::exists(settings_path) && io::read_file(settings_path, 1 << 16) == settings) {
        results = read_eval_json(eval_path);
      } else {
        Checkpoint ck = load_for_inference(final_ckpt);
        // Evaluated on the CPU in the precision it was trained in.
        ck.model->set_execution(
            train::execution(Device::Kind::CPU, config.train.precision, config.train.attention).ops);
        results = evaluate_replicate(study, r, config, *ck.model, comm);
        if (leader) {
          io::write_file_atomic(eval_path, format_json(results, ck.model->num_layers()));
          io::write_file_atomic(run_dir + "/eval.csv", format_csv(results, ck.model->num_layers()));
          io::write_file_atomic(settings_path, settings);
        }
      }
      if (leader) update_curves(curves, run_dir, r.name, row_seed, config, comm.world_size());
      for (PlanResult& p : results) {
        rows.push_back({r.name, row_seed, r.shallow,
                        layers::policy_name(config.router.config.policy), static_cast<int>(config.model.num_layers),
                        std::move(p)});
      }
      if (leader && !info.budget.count(r.name)) info.budget[r.name] = run_budget(config, comm.world_size());
      if (leader) write_report(study, info, rows, curves, false);  // a partial study has a report too
    }
  }
  if (leader) write_report(study, info, rows, curves, true);
  return true;
}

}  // namespace kvroute::eval
