#pragma once
// Small text helpers shared by the switchyard-ctl commands: numbers as operators read them
// ("95,021", "4.98%") and left/right aligned plain-text tables.
//
// Thread: any (pure).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sy::ctl {

// 1234567 -> "1,234,567".
std::string groupDigits(uint64_t n);

// 0.04979 -> "4.98%" (two decimals: the SPEC's 0.01% granularity).
std::string percent(double fraction);

// A weight as written in a config: integers without decimals ("95"), others as short as exact
// enough ("2.5", "0.01").
std::string weightText(double w);

// printf into a std::string.
std::string strFormat(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Word-wraps `text` to `width` columns: the first line starts with `first_prefix`, the others
// with `indent` spaces; every line ends with '\n'. Words longer than a line are not split.
std::string wrapText(std::string_view text, std::string_view first_prefix, size_t indent,
                     size_t width = 100);

// Columns padded to their widest cell. `align` has one letter per column, 'l' or 'r' (numbers);
// columns beyond it are right-aligned. Trailing spaces are trimmed from every line.
class Table {
 public:
  explicit Table(std::string_view align) : align_(align) {}
  void row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  // Every line starts with `indent` and ends with '\n'.
  std::string render(std::string_view indent = "  ") const;

 private:
  std::string align_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace sy::ctl
