import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.HexFormat;

import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;

/**
 * Reads slmops records and writes them again with Apache Avro for Java.
 *
 * <p>Each stdin line is "schema .avsc path TAB hex of a single-object record". For each, it
 * decodes the record with BinaryMessageDecoder (which checks the header's fingerprint), encodes
 * the value again with BinaryMessageEncoder and prints its hex. With "fingerprints" as its
 * argument it prints, per schema path read from stdin, the path, the fingerprint Java writes
 * and the canonical form, tab-separated.
 */
public final class Conformance {
    public static void main(String[] args) throws Exception {
        boolean fingerprints = args.length > 0 && args[0].equals("fingerprints");
        HexFormat hex = HexFormat.of();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line; (line = in.readLine()) != null; ) {
            if (fingerprints) {
                Schema schema = new Schema.Parser().parse(new File(line));
                long fp = SchemaNormalization.parsingFingerprint64(schema);
                byte[] le = ByteBuffer.allocate(8).order(java.nio.ByteOrder.LITTLE_ENDIAN).putLong(fp).array();
                System.out.println(line + "\t" + hex.formatHex(le) + "\t" + SchemaNormalization.toParsingForm(schema));
                continue;
            }
            String[] parts = line.split("\t", 2);
            Schema schema = new Schema.Parser().parse(new File(parts[0]));
            BinaryMessageDecoder<GenericRecord> decoder = new BinaryMessageDecoder<>(GenericData.get(), schema);
            GenericRecord record = decoder.decode(hex.parseHex(parts[1]));
            ByteBuffer out = new BinaryMessageEncoder<GenericRecord>(GenericData.get(), schema).encode(record);
            byte[] bytes = new byte[out.remaining()];
            out.get(bytes);
            System.out.println(hex.formatHex(bytes));
        }
    }
}
