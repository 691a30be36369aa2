#include "tools/ctl/format.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>

namespace sy::ctl {

std::string groupDigits(uint64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  out.reserve(digits.size() + digits.size() / 3);
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

std::string percent(double fraction) { return strFormat("%.2f%%", fraction * 100.0); }

std::string weightText(double w) {
  if (std::isfinite(w) && w == std::floor(w) && std::fabs(w) < 1e15) {
    return strFormat("%.0f", w);
  }
  return strFormat("%g", w);
}

std::string strFormat(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list copy;
  va_copy(copy, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  std::string out;
  if (n > 0) {
    out.resize(static_cast<size_t>(n) + 1);
    std::vsnprintf(out.data(), out.size(), fmt, ap);
    out.resize(static_cast<size_t>(n));
  }
  va_end(ap);
  return out;
}

std::string wrapText(std::string_view text, std::string_view first_prefix, size_t indent,
                     size_t width) {
  std::string out;
  std::string current(first_prefix);
  bool line_has_word = false;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(' ', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view word = text.substr(pos, end - pos);
    pos = end + 1;
    if (word.empty()) continue;
    if (line_has_word && current.size() + 1 + word.size() > width) {
      out += current + "\n";
      current.assign(indent, ' ');
      line_has_word = false;
    }
    if (line_has_word) current += ' ';
    current += word;
    line_has_word = true;
  }
  return out + current + "\n";
}

std::string Table::render(std::string_view indent) const {
  std::vector<size_t> widths;
  for (const auto& r : rows_) {
    if (widths.size() < r.size()) widths.resize(r.size(), 0);
    for (size_t i = 0; i < r.size(); ++i) widths[i] = std::max(widths[i], r[i].size());
  }
  std::string out;
  for (const auto& r : rows_) {
    std::string line(indent);
    for (size_t i = 0; i < r.size(); ++i) {
      if (i > 0) line += "  ";
      const std::string pad(widths[i] - r[i].size(), ' ');
      line += i < align_.size() && align_[i] == 'l' ? r[i] + pad : pad + r[i];
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  }
  return out;
}

}  // namespace sy::ctl
