using System.Text.RegularExpressions;
using HandoffDapr.Core.Repositories;

namespace HandoffDapr.Core.Tests;

public sealed class BranchNamerTests
{
    private static readonly Regex Shape = new("^[0-9a-z\\-_/]*-[a-z0-9]{6}$");

    [Theory]
    [InlineData("Timeout", "timeout")]
    [InlineData("Database connection timeout", "database-connection-timeout")]
    [InlineData("Database connection timeout in checkout flow", "database-connection-timeout")]
    [InlineData("snake_case_title here", "snake-case-title-here")]
    [InlineData("Fix: crash (NPE) in checkout!", "fix-crash-npe")]
    [InlineData("api/v2//users broken", "api/v2/users-broken")]
    [InlineData("/leading slash", "leading-slash")]
    [InlineData("trailing/ slash", "trailing/-slash")]
    [InlineData("Broken checkout api/", "broken-checkout-api")]
    [InlineData("Timeout in api// ", "timeout-in-api")]
    [InlineData("Ünïcödé tïtlé ok", "ncd-ttl-ok")]
    public void Prefix_is_the_first_three_words_sanitised(string title, string prefix)
    {
        var name = BranchNamer.Create(title, 1, "acme/shop", 1);

        Assert.StartsWith(prefix + "-", name);
        Assert.Matches(Shape, name);
        Assert.Equal(prefix.Length + 7, name.Length);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("!!! ??? ***")]
    public void Nothing_left_of_the_title_gives_branch_prefix(string? title)
    {
        Assert.Matches("^branch-[a-z0-9]{6}$", BranchNamer.Create(title, 1, "acme/shop", 1));
    }

    [Fact]
    public void Same_inputs_give_the_same_name_and_any_change_gives_another_suffix()
    {
        var name = BranchNamer.Create("Database timeout", 7, "acme/shop", 1);

        Assert.Equal(name, BranchNamer.Create("Database timeout", 7, "acme/shop", 1));
        Assert.Equal(name, BranchNamer.Create("Database timeout", 7, "ACME/Shop", 1));
        Assert.NotEqual(name, BranchNamer.Create("Database timeout", 7, "acme/web", 1));
        Assert.NotEqual(name, BranchNamer.Create("Database timeout", 8, "acme/shop", 1));
        Assert.NotEqual(name, BranchNamer.Create("Database timeout", 7, "acme/shop", 2));
    }

    [Fact]
    public void Random_titles_always_give_valid_git_branches()
    {
        var random = new Random(42);
        const string alphabet = "abcXYZ019 _-/.:~^?*[\\@{}ÄéÅ😀\t\n";
        for (var i = 0; i < 500; i++)
        {
            var title = new string(Enumerable.Range(0, random.Next(0, 40)).Select(_ => alphabet[random.Next(alphabet.Length)]).ToArray());

            var name = BranchNamer.Create(title, random.NextInt64(1, long.MaxValue), "acme/shop", random.Next(1, 5));

            Assert.Matches(Shape, name);
            Assert.True(GitRefName.IsValidBranch(name), $"'{name}' from '{title}'");
        }
    }

    [Fact]
    public void Prefix_longer_than_60_characters_is_cut_and_what_the_cut_leaves_is_trimmed()
    {
        Assert.StartsWith(new string('a', 60) + "-", BranchNamer.Create(new string('a', 70), 1, "acme/shop", 1));
        Assert.Equal(67, BranchNamer.Create(new string('a', 70), 1, "acme/shop", 1).Length);

        // The cut can leave a trailing '/', which git refuses.
        Assert.StartsWith(new string('a', 59) + "-", BranchNamer.Create(new string('a', 59) + "/bcd", 1, "acme/shop", 1));
    }

    [Fact]
    public void Every_ascii_letter_and_digit_of_the_title_is_kept() =>
        Assert.StartsWith("abcdefghijklmnopqrstuvwxyz-0123456789-", BranchNamer.Create("ABCDEFGHIJKLMnopqrstuvwxyz 0123456789", 1, "acme/shop", 1));
}
