#include <xgrad/core/archive.hpp>

#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <utility>

namespace xgrad {

void Archive::put(const std::string& name, const Tensor& tensor) { tensors_[name] = tensor; }
void Archive::put(const std::string& name, Tensor&& tensor) { tensors_[name] = std::move(tensor); }
void Archive::put_text(const std::string& name, const std::string& text) { texts_[name] = text; }
bool Archive::contains(const std::string& name) const { return tensors_.count(name) || texts_.count(name); }

const Tensor& Archive::tensor(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw std::out_of_range("xgrad: the archive has no tensor '" + name + "'");
    return it->second;
}

const std::string& Archive::text(const std::string& name) const {
    auto it = texts_.find(name);
    if (it == texts_.end()) throw std::out_of_range("xgrad: the archive has no text '" + name + "'");
    return it->second;
}

void Archive::put_integer(const std::string& name, long value) { put_text(name, std::to_string(value)); }

long Archive::integer(const std::string& name) const {
    const std::string& t = text(name);
    errno = 0;
    char* end = nullptr;
    const long value = std::strtol(t.c_str(), &end, 10);
    const bool digits_only = !t.empty() && t.find_first_not_of("0123456789") == std::string::npos;
    if (!digits_only || *end != '\0' || errno != 0) {
        throw std::runtime_error("xgrad: archive entry '" + name + "' should be a whole number >= 0, not '" + t + "'");
    }
    return value;
}

}  // namespace xgrad
