// Durable outputs (core/io.h): the one publish protocol for directories, atomic files, and the
// refusal to write into or over anything that is not of the output's kind.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "core/error.h"
#include "core/io.h"
#include "tests/test_util.h"

namespace kvroute::io {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Names in `dir` other than `keep`: leftovers of a staging protocol.
std::vector<std::string> others(const fs::path& dir, const std::set<std::string>& keep) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (!keep.count(e.path().filename().string())) out.push_back(e.path().filename().string());
  return out;
}

TEST(StagedDirectory, PublishesWholeReplacesWholeAndLeavesNothingBehind) {
  const fs::path dir = testing::temp_dir("io_staged");
  const std::string target = (dir / "out").string();
  {
    StagedDirectory staged(target);
    EXPECT_TRUE(is_staging_name(fs::path(staged.path()).filename().string())) << staged.path();
    write_file_staged(staged.path() + "/a.txt", "one");
    write_file_staged(staged.path() + "/b.txt", "two");
    EXPECT_FALSE(fs::exists(target));  // nothing under the target's name until published
    staged.publish();
  }
  EXPECT_EQ(slurp(fs::path(target) / "a.txt"), "one");
  EXPECT_EQ(others(dir, {"out"}), std::vector<std::string>{});
  EXPECT_EQ(fs::status(target).permissions() & fs::perms::others_read, fs::perms::others_read);
  {
    StagedDirectory staged(target + "/");  // a trailing slash names the same directory
    write_file_staged(staged.path() + "/c.txt", "three");
    staged.publish();
  }
  EXPECT_FALSE(fs::exists(fs::path(target) / "a.txt"));  // replaced whole, not merged
  EXPECT_EQ(slurp(fs::path(target) / "c.txt"), "three");
  EXPECT_EQ(others(dir, {"out"}), std::vector<std::string>{});
  // A write that fails (an exception before publish) leaves the old copy and no staging directory.
  try {
    StagedDirectory staged(target);
    write_file_staged(staged.path() + "/d.txt", "four");
    throw Error("the disk is full");
  } catch (const Error&) {
  }
  EXPECT_EQ(slurp(fs::path(target) / "c.txt"), "three");
  EXPECT_EQ(others(dir, {"out"}), std::vector<std::string>{});
  fs::remove_all(dir);
}

TEST(Outputs, NothingIsWrittenIntoOrOverWhatIsNotOfTheOutputsKind) {
  const fs::path dir = testing::temp_dir("io_kinds");
  fs::create_directories(dir / "adir");
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0644), 0);
  std::ofstream(dir / "file") << "the user's";
  fs::create_symlink("file", dir / "link");
  fs::create_symlink("adir", dir / "dirlink");
  auto refused = [](const std::function<void()>& f, const std::string& words) {
    try {
      f();
      ADD_FAILURE() << "accepted; expected: " << words;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  const std::string d = dir.string();
  refused([&] { write_file_atomic(d + "/fifo", "x"); }, "fifo: exists and is a FIFO, not a regular file");
  refused([&] { write_file_atomic(d + "/adir", "x"); }, "adir: exists and is a directory");
  refused([&] { write_file_atomic(d + "/link", "x"); }, "link: exists and is a symbolic link");
  refused([&] { OutputFile(d + "/fifo", OutputFile::Mode::Append); }, "a FIFO");
  refused([&] { StagedDirectory s(d + "/file"); }, "file: exists and is a regular file, not a directory");
  refused([&] { StagedDirectory s(d + "/fifo"); }, "a FIFO, not a directory");
  refused([&] { StagedDirectory s(d + "/dirlink"); }, "dirlink: exists and is a symbolic link, not a directory");
  if (fs::exists("/dev/null")) refused([] { check_output_file("/dev/null"); }, "a character device");
  // All as they were.
  EXPECT_TRUE(fs::is_fifo(dir / "fifo"));
  EXPECT_EQ(slurp(dir / "file"), "the user's");
  EXPECT_TRUE(fs::is_symlink(dir / "link"));
  EXPECT_TRUE(fs::is_symlink(dir / "dirlink"));
  EXPECT_EQ(others(dir, {"adir", "fifo", "file", "link", "dirlink"}), std::vector<std::string>{});
  // A regular file is replaced atomically, with the mode a plain output gets.
  write_file_atomic(d + "/file", "new");
  EXPECT_EQ(slurp(dir / "file"), "new");
  EXPECT_EQ(fs::status(dir / "file").permissions() & fs::perms::others_read, fs::perms::others_read);
  EXPECT_EQ(others(dir, {"adir", "fifo", "file", "link", "dirlink"}), std::vector<std::string>{});
  fs::remove_all(dir);
}

TEST(Outputs, StagingNamesAreRecognised) {
  EXPECT_TRUE(is_staging_name("step_00000010.staging-AbC123"));
  EXPECT_TRUE(is_staging_name("out.aside-zzzzzz"));
  EXPECT_FALSE(is_staging_name("step_00000010"));
  EXPECT_FALSE(is_staging_name("my.staging-notes.txt"));
  EXPECT_FALSE(is_staging_name("x.staging-abc"));
}

}  // namespace
}  // namespace kvroute::io
