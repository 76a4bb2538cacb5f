#include "eval/sweep.h"

#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "core/io.h"
#include "core/json.h"
#include "eval/evaluate.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace kvroute::eval {

namespace fs = std::filesystem;

namespace {

std::vector<std::string> string_list(const YAML::Node& n, const std::string& where) {
  std::vector<std::string> out;
  if (!n) return out;
  KV_CHECK(n.IsSequence(), "{}: expected a list of section.key=value strings", where);
  for (const auto& item : n) out.push_back(item.as<std::string>());
  return out;
}

}  // namespace

namespace {

Study read_study(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::Load(io::read_file(path, 16 << 20));
  } catch (const YAML::Exception& e) {
    KV_FAIL("{}: invalid YAML at line {}: {}", path, e.mark.line + 1, e.msg);
  }
  KV_CHECK(root.IsMap(), "{}: expected a mapping (study, base, overrides, runs | grid, eval)", path);
  const std::vector<std::string> known = {"study", "base", "overrides", "runs", "grid", "eval", "out"};
  std::set<std::string> seen;
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    KV_CHECK(std::find(known.begin(), known.end(), key) != known.end(),
             "{}: unknown key '{}' (expected study, base, overrides, runs, grid, eval, out)", path, key.substr(0, 60));
    KV_CHECK(seen.insert(key).second, "{}: key '{}' appears twice", path, key);
  }
  Study s;
  s.source = path;
  KV_CHECK(root["study"] && root["base"], "{}: 'study' (a name) and 'base' (a run config) are required", path);
  s.name = root["study"].as<std::string>();
  s.base_config = root["base"].as<std::string>();
  s.out_dir = root["out"] ? root["out"].as<std::string>() : (fs::path(path).parent_path() / s.name).string();
  s.overrides = string_list(root["overrides"], path + ": overrides");
  if (root["runs"]) {
    KV_CHECK(root["runs"].IsSequence(), "{}: runs must be a list of {{name, overrides}}", path);
    for (const auto& r : root["runs"]) {
      KV_CHECK(r["name"], "{}: every run needs a name", path);
      s.runs.push_back({r["name"].as<std::string>(), string_list(r["overrides"], path + ": runs.overrides")});
    }
  }
  if (root["grid"]) {  // the Cartesian product of section.key: [values]
    KV_CHECK(root["grid"].IsMap(), "{}: grid must map section.key to a list of values", path);
    std::vector<StudyRun> grid = {{"", {}}};
    for (const auto& kv : root["grid"]) {
      const std::string key = kv.first.as<std::string>();
      KV_CHECK(kv.second.IsSequence(), "{}: grid.{} must be a list", path, key);
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
  }
  KV_CHECK(!s.runs.empty(), "{}: no runs (give 'runs' or 'grid')", path);
  if (root["eval"]) {
    if (root["eval"]["retention"]) s.retention = root["eval"]["retention"].as<std::vector<double>>();
    if (root["eval"]["batches"]) s.eval_batches = root["eval"]["batches"].as<int64_t>();
    for (double r : s.retention) KV_CHECK(r > 0 && r <= 1, "{}: eval.retention {} is out of range (0, 1]", path, r);
    KV_CHECK(s.eval_batches >= 0, "{}: eval.batches {} must be >= 0", path, s.eval_batches);
  }
  // Validate every run's config now, so a typo fails before hours of training.
  for (const StudyRun& r : s.runs) {
    std::vector<std::string> all = s.overrides;
    all.insert(all.end(), r.overrides.begin(), r.overrides.end());
    try {
      (void)train::load_config(s.base_config, all);
    } catch (const Error& e) {
      KV_FAIL("{}: run '{}': {}", path, r.name, e.what());
    }
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

std::string run_study(const Study& study, dist::Communicator& comm) {
  const bool leader = comm.rank() == 0;
  struct Row {
    std::string run;
    std::vector<PlanResult> results;
    int layers;
  };
  std::vector<Row> rows;
  for (const StudyRun& r : study.runs) {
    std::vector<std::string> all = study.overrides;
    all.insert(all.end(), r.overrides.begin(), r.overrides.end());
    const std::string run_dir = study.out_dir + "/runs/" + r.name;
    all.push_back("train.run_dir=" + run_dir);
    all.push_back("train.name=" + r.name);
    train::RunConfig config = train::load_config(study.base_config, all);
    const std::string final_ckpt = train::checkpoint_path(config.checkpoints_dir(), config.train.steps);
    if (fs::exists(final_ckpt + "/model.safetensors")) {
      if (leader) std::printf("sweep: %s already trained (%s)\n", r.name.c_str(), final_ckpt.c_str());
    } else {
      if (leader) std::printf("sweep: training %s\n", r.name.c_str());
      train::run_training(config, comm, {"auto", 0, false});
    }
    Row row{r.name, {}, static_cast<int>(config.model.num_layers)};
    const std::string eval_path = run_dir + "/eval.json";
    if (fs::exists(eval_path)) {
      try {
        for (const auto& j : json::parse_file(eval_path)) {
          PlanResult p;
          p.label = j.at("plan");
          p.strategy = j.at("strategy");
          p.kept = j.at("kept").get<std::vector<int>>();
          p.loss = j.at("val_loss");
          p.perplexity = j.at("perplexity");
          p.tokens = j.at("tokens");
          row.results.push_back(p);
        }
      } catch (const nlohmann::json::exception& e) {
        KV_FAIL("{}: not an eval.json of kvroute eval ({}); delete it to evaluate again", eval_path, e.what());
      }
    } else {
      Checkpoint ck = load_for_inference(final_ckpt);
      for (double ret : study.retention) {
        const int L = ck.model->num_layers();
        row.results.push_back(evaluate_keep_set(*ck.model, config.data.dir, config.train.seq_len, config.train.batch_size,
                                                study.eval_batches, layers::keep_retention(L, ret),
                                                fmt::format("retention {:g}", ret), "even", comm));
      }
      if (leader) {
        io::write_file_atomic(eval_path, format_json(row.results, row.layers));
        io::write_file_atomic(run_dir + "/eval.csv", format_csv(row.results, row.layers));
      }
    }
    rows.push_back(row);
  }
  if (!leader) return "";

  // results.csv
  fs::create_directories(study.out_dir);
  {
    std::string csv = "run,plan,kept,num_layers,kv_fraction,val_loss,perplexity,tokens\n";
    for (const Row& row : rows) {
      for (const PlanResult& p : row.results) {
        csv += fmt::format("{},{},{},{},{:.4f},{:.6f},{:.4f},{}\n", row.run, p.label, p.kept.size(), row.layers,
                           static_cast<double>(p.kept.size()) / row.layers, p.loss, p.perplexity, p.tokens);
      }
    }
    io::write_file_atomic(study.out_dir + "/results.csv", csv);
  }
  // report.md: validation loss by run and retention.
  std::string md = fmt::format("# Study: {}\n\nBase config `{}`; study file `{}`. Validation loss (perplexity) of each "
                               "model with a KV cache kept in the given fraction of layers (evenly spread; the other "
                               "layers read the nearest kept layer below).\n\n| run |",
                               study.name, study.base_config, study.source);
  for (double r : study.retention) md += fmt::format(" {:g}% |", 100 * r);
  md += "\n|---|";
  for (size_t i = 0; i < study.retention.size(); ++i) md += "---|";
  md += "\n";
  for (const Row& row : rows) {
    md += "| " + row.run + " |";
    for (const PlanResult& p : row.results) md += fmt::format(" {:.4f} ({:.1f}) |", p.loss, p.perplexity);
    md += "\n";
  }
  md += "\n![validation loss vs retention](plot.png)\n";
  io::write_file_atomic(study.out_dir + "/report.md", md);

  // plot.png with gnuplot: one line per run.
  const std::string dat = study.out_dir + "/plot.dat";
  {
    std::string out;
    for (const Row& row : rows) {
      out += "\"" + row.run + "\"\n";
      for (const PlanResult& p : row.results)
        out += fmt::format("{:.4f} {:.6f}\n", 100.0 * static_cast<double>(p.kept.size()) / row.layers, p.loss);
      out += "\n\n";
    }
    io::write_file_atomic(dat, out);
  }
  const std::string script = study.out_dir + "/plot.gp";
  io::write_file_atomic(script, fmt::format(
      "set terminal pngcairo size 900,600 font 'sans,11' noenhanced\nset output '{}/plot.png'\n"
      "set title 'Validation loss vs KV-cache retention ({})'\nset xlabel 'layers keeping a KV cache (%)'\n"
      "set ylabel 'validation loss'\nset key outside right\nset grid\nset xrange [*:*] reverse\n"
      "plot for [i=0:{}] '{}' index i using 1:2 with linespoints lw 2 pt 7 title columnheader(1)\n",
      study.out_dir, study.name, rows.size() - 1, dat));
  if (std::system(fmt::format("gnuplot '{}' 2> '{}/plot.log'", script, study.out_dir).c_str()) != 0) {
    std::printf("sweep: gnuplot failed (see %s/plot.log); results.csv and report.md are complete\n", study.out_dir.c_str());
  }
  std::printf("\n%s", md.c_str());
  return study.out_dir + "/report.md";
}

}  // namespace kvroute::eval
