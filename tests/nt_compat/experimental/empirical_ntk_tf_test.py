# Copyright 2022 Google LLC
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     https://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Tests for `examples/experimental/empirical_ntk_tf.py`."""

from absl.testing import absltest

from tests.nt_compat.examples.experimental import empirical_ntk_tf


class EmpiricalNtkTfTest(absltest.TestCase):

  def test_empirical_ntk_tf_test(self):
    empirical_ntk_tf.main(None)


if __name__ == '__main__':
  absltest.main()
