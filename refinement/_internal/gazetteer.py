"""Word lists the note scrubber uses beside the entity recognizer: names, places, plate regions.

The Japanese recognizer (Sudachi's dictionary, or GiNZA) finds most Japanese names and
places but misses some, and no PyPI-distributed English NER model is official, so English
names and places come from these lists plus context rules in
:mod:`refinement._internal.patterns`. The lists hold common names only; they raise
recall, they do not bound it.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Japanese family names (kanji), the most common ~150.
JA_FAMILY = _words("""
佐藤 鈴木 高橋 田中 伊藤 渡辺 渡部 山本 中村 小林 加藤 吉田 山田 佐々木 山口 松本 井上 木村 林 斎藤 斉藤
清水 山崎 森 池田 橋本 阿部 石川 山下 中島 石井 小川 前田 岡田 長谷川 藤田 後藤 近藤 村上 遠藤 青木
坂本 斉藤 福田 太田 西村 藤井 金子 岡本 藤原 中野 三浦 原田 中川 松田 竹内 小野 田村 中山 和田 石田
森田 上田 原 柴田 酒井 工藤 横山 宮崎 宮本 内田 高木 安藤 島田 谷口 大野 丸山 今井 高田 藤本 武田
村田 上野 杉山 増田 小山 大塚 平野 菅原 久保 松井 千葉 岩崎 桜井 木下 野口 松尾 菊地 野村 新井 渡部
佐野 杉本 大西 古川 浜田 市川 小島 水野 桑原 荒木 北村 西田 松下 小松 中田 堀 大橋 今村 高野 服部
吉川 山内 西川 五十嵐 川口 関 永井 岩田 北川 辻 川村 平田 飯田 吉村 本田 久保田 沢田 辻本 関口
""")
# Japanese given names (kanji/kana), common ones across generations.
JA_GIVEN = _words("""
太郎 次郎 健一 健太 誠 翔 大輔 拓也 直樹 浩 浩二 隆 剛 学 修 亮 達也 和也 哲也 雄一 一郎 健 翔太 蓮 大翔
陽翔 悠真 湊 樹 颯 悠人 裕太 健二 正 茂 勇 博 清 進 実 豊 明 聡 大樹 拓海 優斗
花子 美咲 裕子 恵子 京子 洋子 由美 真由美 智子 陽子 直子 幸子 久美子 愛 彩 結衣 陽菜 葵 さくら 美穂
明美 香織 恵 舞 千尋 麻衣 優子 真理 由香 沙織 奈々 美紀 綾 瞳 凛 結菜 芽依 莉子 ゆい はるか
""")
# Honorifics and job titles that follow a Japanese name.
JA_NAME_SUFFIX = (
    "さん",
    "様",
    "さま",
    "君",
    "くん",
    "氏",
    "殿",
    "主任",
    "班長",
    "課長",
    "部長",
    "係長",
    "所長",
    "工場長",
    "社長",
    "先生",
    "作業員",
    "ちゃん",
)
# Words that, right before a name, mark it as a person ("ドライバー佐藤").
JA_NAME_PREFIX = (
    "ドライバー",
    "運転手",
    "担当",
    "担当者",
    "オペレーター",
    "作業員",
    "お客様",
    "受取人",
    "荷受人",
    "連絡者",
    "相手方",
    "夜勤の",
    "日勤の",
    "交代の",
)

# English given names (and romanised Japanese, Chinese, Korean, Indian, Spanish ones).
EN_GIVEN = _words("""
James John Robert Michael William David Richard Joseph Thomas Charles Christopher Daniel Matthew Anthony Donald
Steven Paul Andrew Joshua Kenneth Kevin Brian George Edward Ronald Timothy Jason Jeffrey Ryan Jacob Gary Nicholas
Eric Jonathan Stephen Larry Justin Scott Brandon Benjamin Samuel Gregory Frank Alexander Raymond Patrick Jack
Dennis Jerry Tyler Aaron Jose Adam Henry Nathan Douglas Zachary Peter Kyle Walter Ethan Jeremy Harold Keith
Christian Roger Noah Gerald Carl Terry Sean Austin Arthur Lawrence Jesse Dylan Bryan Joe Jordan Billy Bruce Albert
Willie Gabriel Logan Alan Juan Wayne Roy Ralph Randy Eugene Vincent Russell Elijah Louis Bobby Philip Johnny
Tom Tim Mike Dave Dan Chris Steve Rob Bob Jim Jimmy Nick Ben Sam Matt Alex Tony Andy Ed Pete Greg Jeff Liam Oliver
Lucas Mason Leo Oscar Harry Charlie Freddie Alfie Archie Theo
Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Nancy Lisa Betty Margaret Sandra Ashley
Kimberly Emily Donna Michelle Dorothy Carol Amanda Melissa Deborah Stephanie Rebecca Sharon Laura Cynthia Kathleen
Amy Shirley Angela Helen Anna Brenda Pamela Nicole Emma Samantha Katherine Christine Debra Rachel Catherine Carolyn
Janet Ruth Maria Heather Diane Virginia Julie Joyce Victoria Olivia Kelly Christina Lauren Joan Evelyn Judith Megan
Cheryl Andrea Hannah Martha Jacqueline Frances Gloria Ann Teresa Kathryn Sara Janice Jean Alice Madison Doris
Abigail Julia Judy Grace Denise Amber Marilyn Beverly Danielle Theresa Sophia Marie Diana Brittany Natalie Isabella
Charlotte Kayla Alexis Lori Kate Sophie Chloe Lucy Ella Mia Amelia Ava Zoe Jane Sue Liz Beth Jenny Kim Naomi
Taro Jiro Kenji Kenichi Hiroshi Takeshi Takashi Satoshi Makoto Kazuki Daisuke Takuya Naoki Yuta Shota Sho Ren
Haruto Yuto Sota Kaito Ryota Kenta Tatsuya Kazuya Tetsuya Yuichi Ichiro Hideki Hideo Koji Masato Yusuke Akira
Shinji Tsuyoshi Yoshiro Osamu Minoru Noboru Isamu Tadashi Hiroki Ryo Jun Shun Daiki Yuki
Hanako Misaki Yuko Keiko Kyoko Yoko Yumi Mayumi Tomoko Naoko Sachiko Kumiko Ai Aya Yui Hina Aoi Sakura Miho
Akemi Kaori Megumi Mai Chihiro Yuka Saori Nana Miki Hitomi Rin Ayumi Aiko Haruka Emi Eri Mari Mika Nao Riko
Wei Li Ming Jing Hui Yan Jun Xin Hao Min Ji Seo Hyun Jin Soo Young Priya Raj Rahul Amit Anil Sunil Deepak Arjun
Ananya Pooja Neha Ahmed Mohammed Mohamed Ali Omar Fatima Aisha Hassan Carlos Miguel Luis Jorge Pedro Diego Javier
Sofia Lucia Carmen Ana Elena Isabel Marco Giulia Luca Hans Klaus Stefan Lars Sven Ingrid Anja Pierre Jean Marie
""")
# Given names that are also common English words; a name only when a surname follows.
EN_AMBIGUOUS_GIVEN = _words("""
Will May Mark Bill Rose Grant Chase Hunter Art Pat Joy Hope Faith June April Summer Dean Drew Gene Jack Sky Ray
Don Guy Rich Frank Bob Sue Ken Jun Min Ji Young Jean Ali Ai Nao Rin Ren Sho Ryo Mai Aoi Nana
""")
EN_FAMILY = _words("""
Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson Anderson
Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young
Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter
Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook
Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks
Chavez Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster
Jimenez Powell Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes Gonzales Fisher Vasquez Simmons
Romero Jordan Patterson Alexander Hamilton Graham Reynolds Griffin Wallace Moreno West Cole Hayes Bryant Herrera
Gibson Ellis Tran Medina Aguilar Stevens Murray Ford Castro Marshall Owens Harrison Fernandez McDonald Woods
Washington Kennedy Wells Vargas Henry Chen Freeman Webb Tucker Guzman Burns Crawford Olson Simpson Porter Hunter
Gordon Mendez Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks Holmes Palmer Wagner Black Robertson Boyd Rose Stone
Salazar Fox Warren Mills Meyer Rice Schmidt Garza Daniels Ferguson Nichols Stephens Soto Weaver Ryan Gardner Payne
Grant Dunn Kelley Spencer Hawkins Arnold Pierce Hansen Peters Santos Hart Bradley Knight Elliott Cunningham Duncan
Armstrong Hudson Carroll Lane Riley Andrews Alvarado Ray Delgado Berry Perkins Hoffman Johnston Matthews Pena
Richards Contreras Willis Carpenter Lawrence Sandoval Walsh OConnor Murphy Kelly Byrne Ryan Doyle Fitzgerald
Wang Li Zhang Liu Chen Yang Huang Zhao Wu Zhou Xu Sun Ma Zhu Hu Guo Lin He Gao Luo Park Choi Jung Kang Cho Yoon
Jang Lim Han Shin Singh Kumar Sharma Gupta Shah Khan Hassan Ahmed Ali Mendes Costa Pereira Oliveira Mueller Muller
Schneider Fischer Weber Becker Schulz Rossi Russo Ferrari Bianchi Dubois Martin Bernard Petit Moreau Laurent
Sato Suzuki Takahashi Tanaka Ito Watanabe Yamamoto Nakamura Kobayashi Kato Yoshida Yamada Sasaki Yamaguchi
Matsumoto Inoue Kimura Hayashi Saito Shimizu Yamazaki Mori Ikeda Hashimoto Abe Ishikawa Yamashita Nakajima
Ishii Ogawa Maeda Okada Hasegawa Fujita Goto Kondo Murakami Endo Aoki Sakamoto Fukuda Ota Nishimura Fujii
Kaneko Okamoto Fujiwara Nakano Miura Harada Nakagawa Matsuda Takeuchi Ono Tamura Nakayama Wada Ishida Morita
Ueda Hara Shibata Sakai Kudo Yokoyama Miyazaki Miyamoto Uchida Takagi Ando Shimada Taniguchi Ohno Maruyama
Imai Takada Fujimoto Takeda Murata Ueno Sugiyama Masuda Koyama Otsuka Hirano Sugawara Kubo Matsui Chiba Iwasaki
Sakurai Kinoshita Noguchi Matsuo Kikuchi Nomura Arai Honda Kawaguchi Nishida Kitamura Hirata Iida Yoshimura
""")
# Capitalised words that look like surnames but are usually something else in a note.
EN_AMBIGUOUS_FAMILY = _words("""
Brown White Green Black Young King Wood Hill Long West Cole Ford Price Bell Stone Fox Rice Lane Ray Hart Park
Cook Baker Hunter Mason Gray Grant Rose Hall Ward Reed Wells Woods Mills Payne Hunt Holmes Shaw Berry Cross
Jordan Henry James Thomas Martin Alexander Lawrence Washington Kennedy Chase Ma He Hu Sun Lin Gao Han Jung Jang
Shin Lim Kang Cho Ali Costa Silva Long Ono Abe Ito Ota Mori Hara Honda Chiba Ueno
""")
# Titles before an English-written name.
EN_TITLES = ("Mr", "Mrs", "Ms", "Miss", "Dr", "Mx", "Prof", "Sir", "Madam")
# Role words before an English-written name ("Driver Michael Brown", "recipient Sarah").
EN_ROLES = _words("""
driver operator technician tech customer recipient supervisor lead contact owner engineer manager inspector
mechanic colleague passenger client hire foreman dispatcher trainee sender consignee agent guard caller
""")

# Japanese prefectures (kanji) and major cities/wards without their 市/区 suffix.
JA_PREFECTURES = _words("""
北海道 青森県 岩手県 宮城県 秋田県 山形県 福島県 茨城県 栃木県 群馬県 埼玉県 千葉県 東京都 神奈川県 新潟県 富山県
石川県 福井県 山梨県 長野県 岐阜県 静岡県 愛知県 三重県 滋賀県 京都府 大阪府 兵庫県 奈良県 和歌山県 鳥取県 島根県
岡山県 広島県 山口県 徳島県 香川県 愛媛県 高知県 福岡県 佐賀県 長崎県 熊本県 大分県 宮崎県 鹿児島県 沖縄県
""")
JA_PLACES = _words("""
札幌 仙台 東京 横浜 川崎 相模原 名古屋 京都 大阪 堺 神戸 岡山 広島 北九州 福岡 熊本 さいたま 千葉 新潟 静岡
浜松 豊田 岐阜 金沢 姫路 那覇 鹿児島 宇都宮 水戸 前橋 高崎 甲府 長野 富山 奈良 和歌山 松山 高松 長崎 大分
新宿 渋谷 品川 池袋 銀座 丸の内 大手町 有楽町 六本木 秋葉原 上野 浅草 梅田 難波 心斎橋 天王寺 博多 天神 栄
千代田 中央 港 文京 台東 墨田 江東 目黒 大田 世田谷 中野 杉並 豊島 北 荒川 板橋 練馬 足立 葛飾 江戸川 みなとみらい
""")
# Romanised places for English notes: cities, Tokyo wards, busy districts, well-known world cities.
EN_PLACES = _words("""
Tokyo Osaka Yokohama Nagoya Sapporo Fukuoka Kobe Kyoto Kawasaki Saitama Hiroshima Sendai Chiba Kitakyushu
Sakai Niigata Hamamatsu Kumamoto Sagamihara Okayama Shizuoka Kagoshima Toyota Gifu Kanazawa Himeji Naha Nara
Shinjuku Shibuya Shinagawa Ikebukuro Ginza Marunouchi Otemachi Roppongi Akihabara Ueno Asakusa Umeda Namba
Tenjin Hakata Chiyoda Minato Meguro Setagaya Nakano Suginami Toshima Arakawa Itabashi Nerima Adachi Katsushika
Edogawa Koto Sumida Taito Bunkyo Odaiba Shiodome Tsukiji Kanagawa Hokkaido Okinawa Aichi Hyogo Ibaraki Tochigi
Gunma Mie Shiga Kansai Kanto
London Manchester Birmingham Bristol Leeds Glasgow Edinburgh Paris Berlin Munich Hamburg Frankfurt Madrid
Barcelona Rome Milan Amsterdam Rotterdam Brussels Vienna Zurich Geneva Stockholm Oslo Copenhagen Dublin Lisbon
Prague Warsaw Seoul Busan Beijing Shanghai Shenzhen Guangzhou Taipei Singapore Bangkok Jakarta Manila Sydney
Melbourne Brisbane Perth Auckland Toronto Vancouver Montreal Chicago Boston Seattle Houston Dallas Austin Denver
Atlanta Miami Detroit Phoenix Philadelphia Portland Brooklyn Manhattan
""")
# Regions too broad to identify anyone; never redacted on their own.
BROAD_REGIONS = _words("Japan 日本 Kansai Kanto 関東 関西 Asia Europe 海外 国内")

# Licence-plate region names (運輸支局・自動車検査登録事務所 and ご当地), kanji and kana.
PLATE_REGIONS = _words("""
札幌 函館 旭川 室蘭 苫小牧 釧路 知床 帯広 北見 青森 八戸 弘前 岩手 盛岡 平泉 宮城 仙台 秋田 山形 庄内 福島 会津 郡山
白河 いわき 水戸 土浦 つくば 宇都宮 那須 とちぎ 群馬 前橋 高崎 大宮 川口 所沢 川越 熊谷 春日部 越谷 草加 千葉 成田
習志野 市川 船橋 袖ヶ浦 市原 野田 柏 松戸 品川 世田谷 練馬 杉並 板橋 足立 江東 葛飾 八王子 多摩 横浜 川崎 湘南
相模 新潟 長岡 上越 富山 石川 金沢 福井 山梨 富士山 長野 松本 諏訪 岐阜 飛騨 静岡 浜松 沼津 伊豆 名古屋 尾張小牧
一宮 春日井 豊橋 三河 岡崎 豊田 三重 鈴鹿 四日市 伊勢志摩 滋賀 京都 なにわ 大阪 和泉 堺 神戸 姫路 奈良 飛鳥
和歌山 鳥取 島根 出雲 岡山 倉敷 広島 福山 山口 下関 徳島 香川 高松 愛媛 高知 福岡 北九州 久留米 筑豊 佐賀 長崎
佐世保 熊本 大分 宮崎 鹿児島 奄美 沖縄 江戸川 墨田 中野 豊島 府中 日光 前沢 杉戸 上尾 越谷
""")
