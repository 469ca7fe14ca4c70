# Writes OUT: a C++ table of (name, sql) for every migration file in FILES.
set(body "#include <string_view>\n#include <utility>\n#include <vector>\nnamespace rtmc::pg {\nconst std::vector<std::pair<std::string_view, std::string_view>>& migrations() {\n  static const std::vector<std::pair<std::string_view, std::string_view>> all{\n")
foreach(file IN LISTS FILES)
  get_filename_component(name ${file} NAME)
  file(READ ${file} sql)
  string(APPEND body "    {\"${name}\", R\"rtmc_sql(${sql})rtmc_sql\"},\n")
endforeach()
string(APPEND body "  };\n  return all;\n}\n}  // namespace rtmc::pg\n")
file(WRITE ${OUT} "${body}")
