using System.Buffers.Binary;
using System.Text;

namespace HandoffDapr.FakeSidecar;

/// <summary>gRPC over HTTP/2 framing: each message = 1 byte compressed flag + 4 bytes big-endian length + payload.</summary>
internal static class GrpcFraming
{
    public static bool TryReadSingleMessage(byte[] body, out ReadOnlyMemory<byte> message, out string? error)
    {
        message = default;
        error = null;
        if (body.Length < 5)
        {
            error = body.Length == 0 ? null : "incomplete gRPC message header";
            return body.Length == 0; // an empty body is an empty message (proto3 default)
        }

        if (body[0] != 0)
        {
            error = "compressed gRPC messages are not supported by the fake sidecar";
            return false;
        }

        var length = BinaryPrimitives.ReadUInt32BigEndian(body.AsSpan(1, 4));
        if (length > body.Length - 5)
        {
            error = "incomplete gRPC message";
            return false;
        }

        message = body.AsMemory(5, (int)length);
        return true;
    }

    public static byte[] Frame(byte[] message)
    {
        var framed = new byte[message.Length + 5];
        BinaryPrimitives.WriteUInt32BigEndian(framed.AsSpan(1, 4), (uint)message.Length);
        message.CopyTo(framed, 5);
        return framed;
    }

    /// <summary>grpc-message is percent-encoded: anything outside printable ASCII, and '%' itself.</summary>
    public static string EncodeStatusMessage(string message)
    {
        var sb = new StringBuilder();
        foreach (var b in Encoding.UTF8.GetBytes(message))
        {
            if (b is >= 0x20 and <= 0x7E && b != (byte)'%')
            {
                sb.Append((char)b);
            }
            else
            {
                sb.Append('%').Append(b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
            }
        }

        return sb.ToString();
    }

    /// <summary>Binary (-bin) metadata values are unpadded base64, as grpc-go writes them.</summary>
    public static string EncodeBinaryHeader(byte[] value) => Convert.ToBase64String(value).TrimEnd('=');
}
