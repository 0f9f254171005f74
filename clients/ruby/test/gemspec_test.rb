# frozen_string_literal: true

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
require "minitest/autorun"
require "rubygems"
require "tmpdir"

# The gemspec is valid and packs every library file (no daemon needed).
class GemspecTest < Minitest::Test
  def test_gemspec_builds
    Dir.chdir(File.expand_path("..", __dir__)) do
      spec = Gem::Specification.load("pushline.gemspec")
      assert_equal "pushline", spec.name
      assert_includes spec.files, "lib/pushline.rb"
      assert_includes spec.files, "lib/pushline/client.rb"
      assert_empty spec.runtime_dependencies, "stdlib only"
      spec.validate(false)
    end
  end
end
